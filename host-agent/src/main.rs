//! `affinity-agent`: the forwarding-agent core on a Linux router's traffic.
//!
//! Policy routing (set up by the operator, e.g. the lab) sends forwarded
//! traffic into a TUN device; this process runs each packet through the same
//! `affinity-forwarding-agent` core as the VPP plugin and writes it back for the kernel
//! to route. Service messages use UDP 1637; `affinity-agent status` reads the
//! tables over a Unix socket.

mod show;
mod tun;

use affinity_api::*;
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  affinity-agent --tun NAME --address ADDR [--name NAME] [--listen PORT]
                 [--multicast-group GROUP] [--manager ADDR]... [--key-file F --key-id N [--key-algorithm hmac-sha256|keyed-md5]]
                 [--disable-action nat|advertise|seq-adjust|interest] [--fixed-capacity N] [--socket PATH]
  affinity-agent --socket PATH status|fixed|wildcard|managers|stats";

struct Opts {
    tun: String,
    socket: PathBuf,
    listen: u16,
    group: Option<Ipv4Addr>,
    managers: Vec<Ipv4Addr>,
    cfg: AgentConfig,
}

fn parse_args(args: &[String]) -> Result<(Opts, Vec<String>), String> {
    let mut o = Opts {
        tun: String::new(),
        socket: "/run/affinity-agent.sock".into(),
        listen: AGENT_PORT,
        group: None,
        managers: Vec::new(),
        cfg: AgentConfig {
            fixed_capacity: 1 << 18,
            action_capacity: 1 << 16,
            ..Default::default()
        },
    };
    let (mut key_file, mut key_id, mut key_alg) = (None, 1u16, AuthAlgorithm::HmacSha256);
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--tun" => o.tun = val(a)?,
            "--socket" => o.socket = val(a)?.into(),
            "--address" => o.cfg.agent_addr = val(a)?.parse().map_err(|_| "bad --address")?,
            "--name" => o.cfg.agent_name = val(a)?,
            "--listen" => o.listen = val(a)?.parse().map_err(|_| "bad --listen")?,
            "--multicast-group" => {
                o.group = Some(val(a)?.parse().map_err(|_| "bad --multicast-group")?)
            }
            "--manager" => o
                .managers
                .push(val(a)?.parse().map_err(|_| "bad --manager")?),
            "--key-file" => key_file = Some(val(a)?),
            "--key-id" => key_id = val(a)?.parse().map_err(|_| "bad --key-id")?,
            "--key-algorithm" => {
                key_alg = if val(a)? == "keyed-md5" {
                    AuthAlgorithm::KeyedMd5
                } else {
                    AuthAlgorithm::HmacSha256
                }
            }
            "--fixed-capacity" => {
                o.cfg.fixed_capacity = val(a)?.parse().map_err(|_| "bad --fixed-capacity")?
            }
            "--disable-action" => {
                let name = val(a)?;
                let t = affinity_forwarding_agent::actions::action_segment_by_name(&name)
                    .ok_or_else(|| format!("unknown action {name:?}"))?;
                o.cfg.disabled_actions.push(t);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => rest.push(other.to_string()),
        }
    }
    if let Some(f) = key_file {
        let secret = std::fs::read(&f).map_err(|e| format!("{f}: {e}"))?;
        let secret = secret
            .strip_suffix(b"\n")
            .map(<[u8]>::to_vec)
            .unwrap_or(secret);
        o.cfg.auth = AuthPolicy::with_key(Key::new(key_id, key_alg, secret));
    }
    o.cfg.instance_id = u32::from(o.cfg.agent_addr) ^ std::process::id();
    Ok((o, rest))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (o, rest) = match parse_args(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !rest.is_empty() {
        return match show::client(&o.socket, &rest.join(" ")) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("affinity-agent: {e}");
                ExitCode::from(1)
            }
        };
    }
    if o.tun.is_empty() || o.cfg.agent_addr.is_unspecified() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match run(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("affinity-agent: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(o: Opts) -> std::io::Result<()> {
    let tun = Arc::new(tun::Tun::open(&o.tun)?);
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, o.listen))?;
    if let Some(g) = o.group {
        sock.join_multicast_v4(&g, &o.cfg.agent_addr)?;
    }
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let sock = Arc::new(sock);
    let agent = Agent::new(o.cfg);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let start = Instant::now();
    let now = move || start.elapsed().as_nanos() as u64;
    for m in &o.managers {
        let _ = sock.send_to(&agent.build_hello(), SocketAddrV4::new(*m, MANAGER_PORT));
    }
    // Status socket.
    let _ = std::fs::remove_file(&o.socket);
    let listener = UnixListener::bind(&o.socket)?;
    {
        let agent = agent.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut line = String::new();
                let _ = BufReader::new(&conn).read_line(&mut line);
                let text = affinity_forwarding_agent::show::render(&agent, now(), line.trim());
                let _ = (&conn).write_all(text.as_bytes());
            }
        });
    }
    // Data path thread: TUN in, process a batch, TUN out.
    let dp = {
        let (agent, tun, sock, stop) = (agent.clone(), tun.clone(), sock.clone(), stop.clone());
        std::thread::spawn(move || datapath(&agent, &tun, &sock, &stop, now))
    };
    // Control thread (this one): service messages, returned packets, timers.
    let mut worker = agent.worker();
    let mut buf = vec![0u8; 65536];
    let mut last_tick = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
            let t = now();
            let out = agent.handle_control(t, from, &buf[..n]);
            for (to, m) in out.replies {
                let _ = sock.send_to(&m, to);
            }
            for r in out.returned {
                const HEAD: usize = 512;
                let mut pb = vec![0u8; HEAD + r.packet.len()];
                pb[HEAD..].copy_from_slice(&r.packet);
                let len = r.packet.len();
                let d = worker.process_returned(
                    t,
                    &mut PacketBuf::new(&mut pb, HEAD, len),
                    r.rank_limit,
                );
                emit(&tun, &sock, d, &pb, HEAD, len);
            }
            for (to, m) in worker.take_messages() {
                let _ = sock.send_to(&m, to);
            }
        }
        let t = now();
        if t - last_tick >= 100_000_000 {
            last_tick = t;
            for (to, m) in agent.tick(t) {
                let _ = sock.send_to(&m, to);
            }
        }
    }
    let _ = dp.join();
    let _ = std::fs::remove_file(&o.socket);
    Ok(())
}

/// Acts on a disposition: write the packet back, send a punt, or drop.
fn emit(tun: &tun::Tun, sock: &UdpSocket, d: Disposition, buf: &[u8], start: usize, len: usize) {
    match d {
        // Dispatch to a forward address needs a next-hop override the TUN
        // path does not have; the kernel routes it (counted by the core).
        Disposition::Pass | Disposition::Forward(_) => {
            let _ = tun.write_packet(&buf[start..start + len]);
        }
        Disposition::Punt { to, start: s } => {
            let _ = sock.send_to(&buf[s..start + len], to);
        }
        Disposition::Drop(_) | Disposition::Consumed => {}
    }
}

fn datapath(
    agent: &Arc<Agent>,
    tun: &tun::Tun,
    sock: &UdpSocket,
    stop: &AtomicBool,
    now: impl Fn() -> u64,
) {
    const HEAD: usize = 256;
    const SLOT: usize = HEAD + 2048;
    const BATCH: usize = 32;
    let mut worker = agent.worker();
    let mut bufs = vec![0u8; SLOT * BATCH];
    let mut lens = [0usize; BATCH];
    let mut out = [Disposition::Pass; BATCH];
    while !stop.load(Ordering::Relaxed) {
        if !tun.wait_readable(100) {
            continue;
        }
        let mut n = 0;
        while n < BATCH {
            let slot = &mut bufs[n * SLOT + HEAD..(n + 1) * SLOT];
            match tun.read_packet(slot) {
                Ok(len) if len > 0 => {
                    lens[n] = len;
                    n += 1;
                }
                _ => break,
            }
            if !tun.wait_readable(0) {
                break;
            }
        }
        let t = now();
        {
            let mut pkts: Vec<PacketBuf<'_>> = bufs
                .chunks_mut(SLOT)
                .take(n)
                .zip(lens.iter())
                .map(|(b, &l)| PacketBuf::new(b, HEAD, l))
                .collect();
            worker.process_batch(t, &mut pkts, &mut out[..n]);
            for (p, d) in pkts.iter().zip(out.iter()) {
                emit(tun, sock, *d, p.buf, p.start, p.len);
            }
        }
        for (to, m) in worker.take_messages() {
            let _ = sock.send_to(&m, to);
        }
    }
}
