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
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf};
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
    after_help = "Without a command, runs the agent (needs --tun and --address). With a command, asks a running agent over --socket.\nLogs go to stderr (RUST_LOG=debug for more). SIGHUP says hello to the managers again; SIGTERM/SIGINT stop."
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
    /// A manager to say hello to (repeatable).
    #[arg(long = "manager", value_name = "ADDR")]
    managers: Vec<Ipv4Addr>,
    /// File holding the shared key (trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Key id of --key-file.
    #[arg(long, value_name = "N", default_value_t = 1)]
    key_id: u16,
    /// Algorithm of --key-file.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::HmacSha256)]
    key_algorithm: KeyAlgorithm,
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
    cfg: AgentConfig,
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
        ..Default::default()
    };
    if let Some(n) = cli.name {
        cfg.agent_name = n;
    }
    if let Some(f) = cli.key_file {
        let secret = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let secret = secret
            .strip_suffix(b"\n")
            .map(<[u8]>::to_vec)
            .unwrap_or(secret);
        let alg = match cli.key_algorithm {
            KeyAlgorithm::HmacSha256 => AuthAlgorithm::HmacSha256,
            KeyAlgorithm::KeyedMd5 => AuthAlgorithm::KeyedMd5,
        };
        cfg.auth = AuthPolicy::with_key(Key::new(cli.key_id, alg, secret));
    }
    cfg.instance_id = u32::from(cfg.agent_addr) ^ std::process::id();
    Ok(Opts {
        tun,
        socket: cli.socket,
        listen: cli.listen,
        group: cli.multicast_group,
        managers: cli.managers,
        metrics: cli.metrics,
        route_protocol: cli.route_protocol,
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
                print!("{s}");
                if s.starts_with("error:") {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
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
    let tun = Arc::new(tun::Tun::open(&o.tun).map_err(ctx(format_args!("TUN {}", o.tun)))?);
    tun::Tun::set_up(&o.tun).map_err(ctx(format_args!("TUN {} up", o.tun)))?;
    let listen = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, o.listen);
    let sock =
        UdpSocket::bind(listen).map_err(ctx(format_args!("service messages on UDP {listen}")))?;
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
                let mut line = String::new();
                let _ = BufReader::new(&conn).read_line(&mut line);
                let words: Vec<&str> = line.split_whitespace().collect();
                let text = match words.split_last() {
                    Some((&"--json", rest)) => report::json(&agent, now(), rest),
                    _ => affinity_forwarding_agent::show::render(&agent, now(), line.trim()),
                };
                let _ = (&conn).write_all(text.as_bytes());
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
    while !stop.load(Ordering::Relaxed) {
        // Advertised prefixes follow the live wildcards (at least once per
        // `max_sleep`, so an expiry is withdrawn within a second).
        if let Some(r) = routes.as_mut() {
            r.sync(&routes::prefixes(&agent.advertised_prefixes(now())));
        }
        let t = now();
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
        Disposition::Drop(_) | Disposition::Consumed => {}
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
        for (to, m) in worker.take_messages() {
            let _ = sock.send_to(&m, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sleep_until, Cli, Cmd};
    use clap::{CommandFactory, Parser};
    use std::time::Duration;

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
