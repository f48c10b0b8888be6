//! `affinity-agent`: the forwarding-agent core on a Linux router's traffic.
//!
//! Policy routing (set up by the operator, e.g. the lab) sends forwarded
//! traffic into a TUN device; this process runs each packet through the same
//! `affinity-forwarding-agent` core as the VPP plugin and writes it back for the kernel
//! to route. Service messages use UDP 1637; `affinity-agent status` reads the
//! tables over a Unix socket.

mod metrics;
mod report;
mod routes;
mod show;
mod tun;

use affinity_api::{AuthAlgorithm, AuthPolicy, Key, AGENT_PORT, MANAGER_PORT};
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf, Worker};
use clap::{Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The affinity host forwarding agent: runs forwarded traffic from a TUN
/// device through the affinity tables, under the service managers.
#[derive(Debug, Parser)]
#[command(
    name = "affinity-agent",
    version,
    after_help = "Without a command, runs the agent (needs --tun and --address). With a command, asks a running agent over --socket.\nControl messages are accepted only from the --manager addresses unless --accept-any-manager is given. Without --key-file the agent runs in OPEN mode (no authentication): trusted LANs only.\nLogs go to stderr (RUST_LOG=debug for more). SIGHUP says hello to the managers again; SIGTERM/SIGINT stop."
)]
struct Cli {
    /// TUN device to create or attach to (brought up by the agent).
    #[arg(long, value_name = "NAME")]
    tun: Option<String>,
    /// This router's control address: source of punts, its identity.
    #[arg(long, value_name = "ADDR")]
    address: Option<Ipv4Addr>,
    /// Host name sent in identity info.
    #[arg(long)]
    name: Option<String>,
    /// UDP port for service messages from managers.
    #[arg(long, value_name = "PORT", default_value_t = AGENT_PORT)]
    listen: u16,
    /// Multicast group of wildcard updates to join.
    #[arg(long, value_name = "GROUP")]
    multicast_group: Option<Ipv4Addr>,
    /// A manager to say hello to and accept control from (repeatable).
    #[arg(long = "manager", value_name = "ADDR")]
    managers: Vec<Ipv4Addr>,
    /// Accept control messages from any address, not only the --manager ones.
    #[arg(long)]
    accept_any_manager: bool,
    /// File holding the shared key (trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Key id of --key-file.
    #[arg(long, value_name = "N", default_value_t = 1)]
    key_id: u16,
    /// Algorithm of --key-file.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::HmacSha256)]
    key_algorithm: KeyAlgorithm,
    /// A manager identity (address) the key may speak for (repeatable;
    /// none = any identity).
    #[arg(long = "key-identity", value_name = "ADDR")]
    key_identities: Vec<Ipv4Addr>,
    /// Fixed affinities one manager may hold (default: the core's).
    #[arg(long, value_name = "N")]
    fixed_quota: Option<usize>,
    /// Wildcards one manager may hold (default: the core's).
    #[arg(long, value_name = "N")]
    wildcard_quota: Option<usize>,
    /// Distinct wildcard mask patterns one manager may use (default 8).
    #[arg(long, value_name = "N")]
    pattern_quota: Option<usize>,
    /// Control socket receive buffer (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    rcvbuf: usize,
    /// How often each manager gets an activity report of the fixed
    /// affinities that carried packets (ms; 0 = never). Managers renew only
    /// flows reported active.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    activity_report_interval_ms: u64,
    /// Treat an action as unsupported (repeatable): nat, advertise, seq-adjust, interest.
    #[arg(long = "disable-action", value_name = "ACTION", value_parser = parse_action)]
    disabled_actions: Vec<u16>,
    /// Fixed affinity table size.
    #[arg(long, value_name = "N", default_value_t = 1 << 18)]
    fixed_capacity: usize,
    /// Advertised prefixes become kernel routes through the TUN with this
    /// route protocol number (0 = install no routes).
    #[arg(long, value_name = "N", default_value_t = routes::DEFAULT_ROUTE_PROTOCOL)]
    route_protocol: u8,
    /// Status socket (served when running, asked by commands).
    #[arg(long, value_name = "PATH", default_value = "/run/affinity-agent.sock")]
    socket: PathBuf,
    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyAlgorithm {
    HmacSha256,
    KeyedMd5,
}

fn parse_action(name: &str) -> Result<u16, String> {
    affinity_forwarding_agent::actions::action_segment_by_name(name)
        .ok_or_else(|| format!("unknown action {name:?} (nat, advertise, seq-adjust, interest)"))
}

/// Questions to a running agent (over --socket).
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Everything: fixed, wildcard, managers, stats.
    Status {
        /// Machine-readable: one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Fixed affinities; filters: proto P, src A, dst A, limit N, verbose.
    Fixed {
        #[arg(long)]
        json: bool,
        filters: Vec<String>,
    },
    /// Wildcard affinities.
    Wildcard {
        #[arg(long)]
        json: bool,
    },
    /// Managers heard from.
    Managers {
        #[arg(long)]
        json: bool,
    },
    /// Counters (non-zero; --json: all) and forward statistics.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// `clear stats`: counters restart from zero.
    Clear {
        #[arg(value_parser = ["stats"])]
        what: String,
    },
}

impl Cmd {
    /// The status-socket line.
    fn line(&self) -> String {
        let (words, json) = match self {
            Cmd::Status { json } => ("status".to_string(), *json),
            Cmd::Fixed { json, filters } => {
                let mut w = vec!["fixed".to_string()];
                w.extend(filters.iter().cloned());
                (w.join(" "), *json)
            }
            Cmd::Wildcard { json } => ("wildcard".to_string(), *json),
            Cmd::Managers { json } => ("managers".to_string(), *json),
            Cmd::Stats { json } => ("stats".to_string(), *json),
            Cmd::Clear { what } => (format!("clear {what}"), false),
        };
        if json {
            format!("{words} --json")
        } else {
            words
        }
    }
}

struct Opts {
    tun: String,
    socket: PathBuf,
    listen: u16,
    group: Option<Ipv4Addr>,
    managers: Vec<Ipv4Addr>,
    metrics: Option<SocketAddr>,
    /// Route protocol number of advertised prefixes' kernel routes; 0 =
    /// do not install routes.
    route_protocol: u8,
    /// Control socket receive buffer (bytes): a burst of updates must not
    /// overflow the kernel default (~200 KiB) while a batch is applied.
    rcvbuf: usize,
    cfg: AgentConfig,
}

/// Reads a key file (the core's bounded reader,
/// [`affinity_forwarding_agent::config::read_key_file`]); the error text
/// names the file.
fn read_key_file(path: &str) -> Result<Vec<u8>, String> {
    affinity_forwarding_agent::config::read_key_file(std::path::Path::new(path))
        .map_err(|e| format!("{path}: {e}"))
}

fn opts(cli: Cli) -> Result<Opts, String> {
    let (Some(tun), Some(address)) = (cli.tun, cli.address) else {
        return Err("to run, give --tun NAME and --address ADDR (or a command)".into());
    };
    let mut cfg = AgentConfig {
        fixed_capacity: cli.fixed_capacity,
        action_capacity: 1 << 16,
        agent_addr: address,
        disabled_actions: cli.disabled_actions,
        activity_report_interval_ms: cli.activity_report_interval_ms,
        ..Default::default()
    };
    if let Some(n) = cli.name {
        cfg.agent_name = n;
    }
    if let Some(f) = cli.key_file {
        let secret = read_key_file(&f.to_string_lossy())?;
        let alg = match cli.key_algorithm {
            KeyAlgorithm::HmacSha256 => AuthAlgorithm::HmacSha256,
            KeyAlgorithm::KeyedMd5 => AuthAlgorithm::KeyedMd5,
        };
        cfg.auth = AuthPolicy::with_key(
            Key::new(cli.key_id, alg, secret).for_identities(cli.key_identities),
        );
    }
    if let Some(n) = cli.fixed_quota {
        cfg.owner_quota.fixed = n;
    }
    if let Some(n) = cli.wildcard_quota {
        cfg.owner_quota.wildcards = n;
    }
    if let Some(n) = cli.pattern_quota {
        cfg.owner_quota.wildcard_patterns = n;
    }
    if !cli.accept_any_manager {
        cfg.allowed_managers = Some(cli.managers.clone());
    }
    cfg.multicast_groups.extend(cli.multicast_group);
    cfg.instance_id = u32::from(cfg.agent_addr) ^ std::process::id();
    Ok(Opts {
        tun,
        socket: cli.socket,
        listen: cli.listen,
        group: cli.multicast_group,
        managers: cli.managers,
        metrics: cli.metrics,
        route_protocol: cli.route_protocol,
        rcvbuf: cli.rcvbuf,
        cfg,
    })
}

/// Logs to stderr at `RUST_LOG` (default `info`), colours only on a
/// terminal (a log file or journald gets plain text).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(cmd) = &cli.command {
        return match show::client(&cli.socket, &cmd.line()) {
            Ok(s) => {
                // `... | head -1` closes the pipe early: that is success,
                // not a panic (print! would panic on EPIPE).
                let mut out = std::io::stdout().lock();
                match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        eprintln!("affinity-agent: {e}");
                        ExitCode::from(1)
                    }
                    _ if s.starts_with("error:") => ExitCode::from(1),
                    _ => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("affinity-agent: {e}");
                ExitCode::from(1)
            }
        };
    }
    let o = match opts(cli) {
        Ok(o) => o,
        Err(e) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let _ = cmd
                .error(clap::error::ErrorKind::MissingRequiredArgument, e)
                .print();
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("affinity-agent: {e}");
            ExitCode::from(1)
        }
    }
}

/// An error that names what failed (`what`: "TUN afftun0", "UDP
/// 0.0.0.0:1637", ...) before the OS's words.
fn ctx(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A manager silent this long (ns) is logged as lost: managers resend
/// their wildcards every third of the wildcard TTL (1 s by default).
const MANAGER_SILENT_NS: u64 = 5_000_000_000;

/// Logs managers heard for the first time, gone silent, and back (state
/// kept in `seen`: address -> lost).
fn watch_managers(agent: &Agent, now: u64, seen: &mut BTreeMap<Ipv4Addr, bool>) {
    for m in agent.managers() {
        let silent = now.saturating_sub(m.last_heard_ns) >= MANAGER_SILENT_NS;
        match seen.get(&m.address).copied() {
            None if !silent => {
                tracing::info!(manager = %m.address, name = %m.name, "manager heard");
                seen.insert(m.address, false);
            }
            Some(false) if silent => {
                tracing::warn!(manager = %m.address, name = %m.name, silent_s = MANAGER_SILENT_NS / 1_000_000_000, "manager lost: not heard for 5 s");
                seen.insert(m.address, true);
            }
            Some(true) if !silent => {
                tracing::info!(manager = %m.address, name = %m.name, "manager back");
                seen.insert(m.address, false);
            }
            _ => {}
        }
    }
}

fn run(o: Opts) -> std::io::Result<()> {
    if o.cfg.auth.keys.is_empty() {
        tracing::warn!(
            "no --key-file: OPEN mode, control messages are not authenticated; trusted LANs only"
        );
    }
    match &o.cfg.allowed_managers {
        Some(m) if m.is_empty() => tracing::warn!("no --manager given: control messages from everyone are refused (--accept-any-manager to accept them)"),
        None => tracing::warn!("--accept-any-manager: control messages accepted from any address"),
        Some(_) => {}
    }
    let tun = Arc::new(tun::Tun::open(&o.tun).map_err(ctx(format_args!("TUN {}", o.tun)))?);
    tun::Tun::set_up(&o.tun).map_err(ctx(format_args!("TUN {} up", o.tun)))?;
    let listen = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, o.listen);
    let sock =
        UdpSocket::bind(listen).map_err(ctx(format_args!("service messages on UDP {listen}")))?;
    set_rcvbuf(&sock, o.rcvbuf);
    if let Some(g) = o.group {
        sock.join_multicast_v4(&g, &o.cfg.agent_addr)
            .map_err(ctx(format_args!(
                "multicast group {g} on {}",
                o.cfg.agent_addr
            )))?;
    }
    let sock = Arc::new(sock);
    let agent = Agent::new(o.cfg);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let hup = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone());
    let start = Instant::now();
    let now = move || start.elapsed().as_nanos() as u64;
    let hello = |why: &str| {
        for m in &o.managers {
            let to = SocketAddrV4::new(*m, MANAGER_PORT);
            if let Err(e) = sock.send_to(&agent.build_hello(), to) {
                tracing::warn!(manager = %to, error = %e, "hello not sent");
            }
        }
        if !o.managers.is_empty() {
            tracing::info!(managers = %list(&o.managers), "hello sent ({why})");
        }
    };
    // Status socket: a file nobody answers on is a leftover; one that
    // answers is another agent's.
    if std::os::unix::net::UnixStream::connect(&o.socket).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "status socket {}: another agent answers there",
                o.socket.display()
            ),
        ));
    }
    let _ = std::fs::remove_file(&o.socket);
    let listener = UnixListener::bind(&o.socket)
        .map_err(ctx(format_args!("status socket {}", o.socket.display())))?;
    {
        let agent = agent.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                // One thread per connection with timeouts and a line limit:
                // an idle client must not block everyone's `status`.
                let agent = agent.clone();
                std::thread::spawn(move || serve_status(&agent, &conn, now()));
            }
        });
    }
    if let Some(addr) = o.metrics {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("metrics {addr}: {e}"),
            )
        })?;
        let agent = agent.clone();
        std::thread::spawn(move || metrics::serve(server, agent, now));
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        address = %agent.config.agent_addr,
        name = %agent.config.agent_name,
        tun = %o.tun,
        listen = %listen,
        multicast_group = %o.group.map_or("none".to_string(), |g| g.to_string()),
        managers = %list(&o.managers),
        status_socket = %o.socket.display(),
        metrics = %o.metrics.map_or("off".to_string(), |a| a.to_string()),
        "affinity-agent running; TUN up"
    );
    hello("start");
    let mut seen = BTreeMap::new();
    let mut next_watch = 0u64;
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
    let mut drops_seen = udp_drops(o.listen).unwrap_or(0);
    let mut drops_checked = now();
    while !stop.load(Ordering::Relaxed) {
        // Advertised prefixes follow the live wildcards (at least once per
        // `max_sleep`, so an expiry is withdrawn within a second).
        if let Some(r) = routes.as_mut() {
            r.sync(&routes::prefixes(&agent.advertised_prefixes(now())));
        }
        let t = now();
        if t.saturating_sub(drops_checked) >= 1_000_000_000 {
            // Loss is counted and visible: the kernel's drops on the
            // control socket (a burst overflowing the receive buffer).
            drops_checked = t;
            if let Some(d) = udp_drops(o.listen) {
                if d > drops_seen {
                    tracing::warn!(
                        dropped = d - drops_seen,
                        "control datagrams dropped by the kernel (receive buffer full; --rcvbuf)"
                    );
                    agent.note_control_drops(d - drops_seen);
                }
                drops_seen = d;
            }
        }
        if hup.swap(false, Ordering::Relaxed) {
            hello("SIGHUP");
        }
        if t >= next_watch {
            next_watch = t + 1_000_000_000;
            watch_managers(&agent, t, &mut seen);
        }
        if agent.poll_timeout().is_some_and(|due| due <= t) {
            for (to, m) in agent.tick(t) {
                let _ = sock.send_to(&m, to);
            }
        }
        // At most a second: the manager watch and SIGHUP run between reads.
        let wait = sleep_until(
            agent.poll_timeout(),
            now(),
            max_sleep.min(Duration::from_secs(1)),
        );
        sock.set_read_timeout(Some(wait))?;
        if let Ok((n, SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
            // Drain what else is queued (a burst) and apply it as one
            // batch: one wildcard snapshot rebuild for the lot.
            let mut burst = vec![(from, buf[..n].to_vec())];
            let _ = sock.set_nonblocking(true);
            while burst.len() < MAX_BURST {
                match sock.recv_from(&mut buf) {
                    Ok((n, SocketAddr::V4(f))) => burst.push((f, buf[..n].to_vec())),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = sock.set_nonblocking(false);
            let t = now();
            let out = agent.handle_control_batch(t, burst.iter().map(|(f, b)| (*f, b.as_slice())));
            for line in &out.log {
                tracing::warn!("{line}");
            }
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
    match std::fs::remove_file(&o.socket) {
        Ok(()) => tracing::info!("stopped; status socket removed"),
        Err(e) => {
            tracing::warn!(path = %o.socket.display(), error = %e, "stopped; status socket not removed")
        }
    }
    Ok(())
}

/// The kernel's drop count for UDP sockets bound to `port` (the last
/// column of `/proc/net/udp`), `None` if it cannot be read.
fn udp_drops(port: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let want = format!(":{port:04X}");
    let sum = text
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&want))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum();
    Some(sum)
}

/// Datagrams applied as one batch at most (see `handle_control_batch`).
const MAX_BURST: usize = 1024;

/// Longest status-socket command line (bytes).
const MAX_STATUS_LINE: u64 = 1024;

/// Answers one status-socket connection: one UTF-8 command line of at most
/// [`MAX_STATUS_LINE`] bytes within 5 s. Anything else gets a fixed error
/// (no echo of the input, and never the status by default).
fn serve_status(agent: &Agent, conn: &std::os::unix::net::UnixStream, now: u64) {
    use std::io::Read;
    let timeout = Some(Duration::from_secs(5));
    let _ = conn.set_read_timeout(timeout);
    let _ = conn.set_write_timeout(timeout);
    let mut raw = Vec::new();
    let ok = BufReader::new(conn.take(MAX_STATUS_LINE))
        .read_until(b'\n', &mut raw)
        .is_ok();
    let complete = raw.last() == Some(&b'\n') || (raw.len() as u64) < MAX_STATUS_LINE;
    let line = std::str::from_utf8(&raw)
        .ok()
        .filter(|_| complete)
        .map(str::trim);
    let text = match line {
        Some(l) if ok && !l.is_empty() && l.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.split_last() {
                Some((&"--json", rest)) => report::json(agent, now, rest),
                _ => affinity_forwarding_agent::show::render(agent, now, l),
            }
        }
        _ => "error: expected one command line (status | tables | fixed | wildcard | managers | stats)\n".into(),
    };
    let mut w = conn;
    let _ = w.write_all(text.as_bytes());
    // Closing with unread input would reset the connection and lose the
    // answer: end our side, then discard a bounded rest of the input.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = std::io::copy(&mut conn.take(1 << 16), &mut std::io::sink());
}

/// Sets the control socket's receive buffer to `bytes` (the kernel caps it
/// at net.core.rmem_max; the value granted is reported if smaller).
fn set_rcvbuf(sock: &UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt/getsockopt on our own socket with an int of the
    // size passed (FFI, the only unsafe here).
    let (rc, got) = unsafe {
        let rc = libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        );
        (rc, got)
    };
    // Linux reports double the requested size (bookkeeping overhead).
    if rc != 0 || (got as usize) < bytes {
        tracing::warn!(
            granted = got,
            asked = bytes,
            "control socket receive buffer smaller than asked (raise net.core.rmem_max)"
        );
    }
}

/// Addresses as `A, B` ("none" for none).
fn list(addrs: &[Ipv4Addr]) -> String {
    if addrs.is_empty() {
        return "none".into();
    }
    addrs
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
        Disposition::Drop(_) | Disposition::Consumed(_) => {}
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
    use super::{read_key_file, serve_status, sleep_until, Cli, Cmd};
    use affinity_forwarding_agent::{Agent, AgentConfig};
    use clap::{CommandFactory, Parser};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn ask(agent: &Agent, input: &[u8]) -> String {
        let (mut c, s) = UnixStream::pair().unwrap();
        c.write_all(input).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        serve_status(agent, &s, 0);
        drop(s);
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn status_socket_answers_commands_only_and_never_echoes() {
        let agent = Agent::new(AgentConfig {
            fixed_capacity: 1024,
            ..Default::default()
        });
        assert!(ask(&agent, b"status\n").contains("tables (used / capacity)"));
        let junk = ask(&agent, &[0x00, 0xff, 0x13, 0x37, b'\n']);
        assert!(junk.starts_with("error:"), "{junk}");
        assert!(ask(&agent, b"").starts_with("error:"));
        let long = ask(&agent, &vec![b's'; 10_000]);
        assert!(
            long.starts_with("error:") && !long.contains("ssss"),
            "{long:.100}"
        );
    }

    #[test]
    fn key_files_are_bounded_and_not_empty() {
        let dir = std::env::temp_dir();
        let p = |n: &str| dir.join(format!("affinity-agent-key-{n}-{}", std::process::id()));
        std::fs::write(p("ok"), "secret\n").unwrap();
        std::fs::write(p("empty"), "\n").unwrap();
        assert_eq!(read_key_file(p("ok").to_str().unwrap()).unwrap(), b"secret");
        assert!(read_key_file(p("empty").to_str().unwrap())
            .unwrap_err()
            .contains("empty"));
        assert!(read_key_file("/dev/zero")
            .unwrap_err()
            .contains("longer than"));
        let _ = std::fs::remove_file(p("ok"));
        let _ = std::fs::remove_file(p("empty"));
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_become_status_socket_lines_and_bad_ones_are_refused() {
        let line = |args: &[&str]| {
            Cli::try_parse_from(args)
                .ok()
                .and_then(|c| c.command)
                .map(|c: Cmd| c.line())
        };
        assert_eq!(
            line(&["affinity-agent", "--socket", "s", "fixed", "limit", "4"]).as_deref(),
            Some("fixed limit 4")
        );
        assert_eq!(
            line(&["affinity-agent", "stats", "--json"]).as_deref(),
            Some("stats --json")
        );
        assert_eq!(
            line(&["affinity-agent", "clear", "stats"]).as_deref(),
            Some("clear stats")
        );
        let bad = |args: &[&str]| {
            Cli::try_parse_from(args)
                .map(|_| ())
                .unwrap_err()
                .exit_code()
        };
        assert_eq!(bad(&["affinity-agent", "bogus"]), 2, "unknown command");
        assert_eq!(bad(&["affinity-agent", "--bogus"]), 2, "unknown option");
        assert_eq!(bad(&["affinity-agent", "--disable-action", "teleport"]), 2);
        assert_eq!(bad(&["affinity-agent", "--help"]), 0);
        assert_eq!(bad(&["affinity-agent", "--version"]), 0);
    }

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
