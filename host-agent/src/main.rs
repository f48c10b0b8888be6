//! `affinity-agent`: the forwarding-agent core on a Linux router's traffic.
//!
//! Policy routing (set up by the operator, e.g. the lab) sends forwarded
//! traffic into a TUN device; this process runs each packet through the same
//! `affinity-forwarding-agent` core as the VPP plugin and writes it back for the kernel
//! to route. Service messages use UDP 1637; `affinity-agent status` reads the
//! tables over a Unix socket.

mod routes;
mod show;
mod tun;

use affinity_api::{AuthAlgorithm, AuthPolicy, Key, AGENT_PORT, MANAGER_PORT};
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf, Worker};
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
                 [--route-protocol N (advertised prefixes become routes with this protocol; default 197, 0 = none)]
  affinity-agent --socket PATH status|fixed|wildcard|managers|stats";

struct Opts {
    tun: String,
    socket: PathBuf,
    listen: u16,
    group: Option<Ipv4Addr>,
    managers: Vec<Ipv4Addr>,
    /// Route protocol number of advertised prefixes' kernel routes; 0 =
    /// do not install routes.
    route_protocol: u8,
    cfg: AgentConfig,
}

fn parse_args(args: &[String]) -> Result<(Opts, Vec<String>), String> {
    let mut o = Opts {
        tun: String::new(),
        socket: "/run/affinity-agent.sock".into(),
        listen: AGENT_PORT,
        group: None,
        managers: Vec::new(),
        route_protocol: routes::DEFAULT_ROUTE_PROTOCOL,
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
            "--route-protocol" => {
                o.route_protocol = val(a)?.parse().map_err(|_| "bad --route-protocol")?
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
    // Control thread (this one): service messages, returned packets, and
    // the agent's timers, sleeping in `recv_from` until the next datagram
    // or the time the agent asked for (`Agent::poll_timeout`).
    let mut worker = agent.worker();
    let max_sleep = max_sleep(&agent);
    let mut buf = vec![0u8; 65536];
    // Returned packets are copied behind this much headroom (punt room),
    // into one buffer reused for every returned packet.
    const HEAD: usize = 512;
    let mut returned = vec![0u8; HEAD + 65536];
    let mut routes =
        (o.route_protocol != 0).then(|| routes::Advertiser::new(&o.tun, o.route_protocol));
    while !stop.load(Ordering::Relaxed) {
        // Advertised prefixes follow the live wildcards (at least once per
        // `max_sleep`, so an expiry is withdrawn within a second).
        if let Some(r) = routes.as_mut() {
            r.sync(&routes::prefixes(&agent.advertised_prefixes(now())));
        }
        let t = now();
        if agent.poll_timeout().is_some_and(|due| due <= t) {
            for (to, m) in agent.tick(t) {
                let _ = sock.send_to(&m, to);
            }
        }
        let wait = sleep_until(agent.poll_timeout(), now(), max_sleep);
        sock.set_read_timeout(Some(wait))?;
        if let Ok((n, SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
            let t = now();
            let out = agent.handle_control(t, from, &buf[..n]);
            for (to, m) in out.replies {
                let _ = sock.send_to(&m, to);
            }
            for r in out.returned {
                let len = r.packet.len();
                let Some(dst) = returned.get_mut(HEAD..HEAD + len) else {
                    continue;
                };
                dst.copy_from_slice(&r.packet);
                let d = worker.process_returned(
                    t,
                    &mut PacketBuf::new(&mut returned, HEAD, len),
                    r.rank_limit,
                );
                emit(&tun, &sock, d, &returned, HEAD, len);
            }
            emit_released(&mut worker, &tun, &sock);
            for (to, m) in worker.take_messages() {
                let _ = sock.send_to(&m, to);
            }
        }
    }
    let _ = dp.join();
    if let Some(r) = routes.as_mut() {
        r.withdraw_all();
    }
    let _ = std::fs::remove_file(&o.socket);
    Ok(())
}

/// The longest the control thread sleeps without a datagram: one second
/// (so a stop signal is seen within a second), and never longer than the
/// hold timeout. Why the latter: a worker may hold a packet while this
/// thread sleeps, and the hold's deadline (hold time + timeout) is then
/// after the sleep ends, so the next `poll_timeout` sees it in time.
fn max_sleep(agent: &Agent) -> Duration {
    Duration::from_secs(1).min(Duration::from_millis(agent.config.hold_timeout_ms.max(1)))
}

/// How long to sleep from `now_ns` until the agent's next deadline
/// (`due_ns`, both the agent's monotonic nanoseconds): at least 1 ms (a
/// zero read timeout would mean "block forever"), at most `max`.
fn sleep_until(due_ns: Option<u64>, now_ns: u64, max: Duration) -> Duration {
    let wait = due_ns.map_or(max, |d| Duration::from_nanos(d.saturating_sub(now_ns)));
    wait.clamp(Duration::from_millis(1), max)
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

/// Sends the fragments the core held until their first fragment's
/// decision (out of order, or the first was with the manager).
fn emit_released(worker: &mut Worker, tun: &tun::Tun, sock: &UdpSocket) {
    for (pkt, d) in worker.take_released() {
        emit(tun, sock, d, &pkt, 0, pkt.len());
    }
}

/// The packet thread: TUN in, a batch through the core, TUN out. Buffers,
/// packet descriptors and dispositions live across batches: nothing is
/// allocated per batch.
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
    /// How long to wait for a packet before checking `stop` again (the
    /// packet thread has no timers; this bounds shutdown only).
    const STOP_CHECK_MS: i32 = 1000;
    let mut worker = agent.worker();
    let mut bufs: Box<[[u8; SLOT]; BATCH]> = Box::new([[0u8; SLOT]; BATCH]);
    let mut out = [Disposition::Pass; BATCH];
    while !stop.load(Ordering::Relaxed) {
        if !tun.wait_readable(STOP_CHECK_MS) {
            // Idle: held fragments whose flow appeared meanwhile go out.
            worker.poll_fragments(now());
            emit_released(&mut worker, tun, sock);
            continue;
        }
        let mut pkts = bufs.each_mut().map(|b| PacketBuf::new(b, HEAD, 0));
        let mut n = 0;
        while let Some(p) = pkts.get_mut(n) {
            match tun.read_packet(&mut p.buf[HEAD..]) {
                Ok(len) if len > 0 => {
                    p.len = len;
                    n += 1;
                }
                _ => break,
            }
            if !tun.wait_readable(0) {
                break;
            }
        }
        worker.process_batch(now(), &mut pkts[..n], &mut out[..n]);
        for (p, d) in pkts.iter().zip(out.iter()).take(n) {
            emit(tun, sock, *d, p.buf, p.start, p.len);
        }
        emit_released(&mut worker, tun, sock);
        for (to, m) in worker.take_messages() {
            let _ = sock.send_to(&m, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sleep_until;
    use std::time::Duration;

    #[test]
    fn sleeps_until_the_deadline_within_bounds() {
        let max = Duration::from_secs(1);
        assert_eq!(sleep_until(None, 5, max), max);
        assert_eq!(
            sleep_until(Some(300_000_000), 100_000_000, max),
            Duration::from_millis(200)
        );
        // Past due: the shortest sleep, never zero (zero blocks forever).
        assert_eq!(sleep_until(Some(1), 100, max), Duration::from_millis(1));
        assert_eq!(sleep_until(Some(u64::MAX), 0, max), max);
    }
}
