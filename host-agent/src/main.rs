//! `affinity-agent`: the forwarding-agent core on a Linux router's traffic.
//!
//! Policy routing (set up by the operator, e.g. the lab) sends forwarded
//! traffic into a TUN device; this process runs each packet through the same
//! `affinity-forwarding-agent` core as the VPP plugin and writes it back for the kernel
//! to route. Service messages use UDP 1637; `affinity-agent status` reads the
//! tables over a Unix socket.

mod cli;
mod metrics;
mod report;
mod routes;
mod status_socket;
mod tun;

use affinity_api::MANAGER_PORT;
use affinity_forwarding_agent::{Agent, Disposition, PacketBuf, Worker};
use clap::Parser;
use cli::{opts, Cli, Opts};
use status_socket::serve_status;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(cmd) = &cli.command {
        let answer = affinity_daemon_common::ask(&cli.socket, &cmd.line(), "agent");
        return affinity_daemon_common::print_answer(answer, "affinity-agent");
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
    affinity_daemon_common::init_logging();
    if o.cfg.max_wildcard_patterns < o.cfg.owner_quota.wildcard_patterns {
        tracing::warn!(
            max_wildcard_patterns = o.cfg.max_wildcard_patterns,
            pattern_quota = o.cfg.owner_quota.wildcard_patterns,
            "the agent-wide pattern cap is below one manager's pattern quota: the cap applies first"
        );
    }
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
        disabled_actions = %disabled_action_names(&agent.config.disabled_actions),
        "affinity-agent running; TUN up"
    );
    // Before the hello: its answers end the warm-up.
    agent.start_warm_up(now(), o.warm_up_ms, &o.managers);
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
    let mut drops_seen = affinity_daemon_common::udp::kernel_drops(o.listen).unwrap_or(0);
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
            if let Some(d) = affinity_daemon_common::udp::kernel_drops(o.listen) {
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

/// Datagrams applied as one batch at most (see `handle_control_batch`).
const MAX_BURST: usize = 1024;

/// Sets the control socket's receive buffer to `bytes` (the kernel caps it
/// at net.core.rmem_max; the value granted is reported if smaller).
fn set_rcvbuf(sock: &UdpSocket, bytes: usize) {
    match affinity_daemon_common::udp::set_receive_buffer(sock, bytes) {
        // Linux reports double the requested size (bookkeeping overhead).
        Ok(got) if got >= bytes => {}
        granted => tracing::warn!(
            granted = ?granted.ok(),
            asked = bytes,
            "control socket receive buffer smaller than asked (raise net.core.rmem_max)"
        ),
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

/// The `--disable-action` names in force, comma-separated, or "none": the
/// start line says what this agent will deny (issue 13), so a log shows
/// why a manager stopped using it.
fn disabled_action_names(types: &[u16]) -> String {
    let names: Vec<&str> = affinity_forwarding_agent::actions::DISABLEABLE_ACTIONS
        .iter()
        .filter(|(_, t)| types.contains(t))
        .map(|&(n, _)| n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
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

/// Sends the packets the core held and has released
/// (`Worker::take_released`): fragments held until their first fragment's
/// decision (out of order, or the first was with the manager), and a
/// SYN-proxied connection's early data, released by its splice.
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
    use super::cli::{read_key_file, Cli, Cmd};
    use super::sleep_until;
    use super::status_socket::serve_status;
    use affinity_forwarding_agent::{Agent, AgentConfig};
    use clap::{CommandFactory, Parser};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn start_line_names_the_disabled_actions() {
        use affinity_api::seg;
        assert_eq!(super::disabled_action_names(&[]), "none");
        assert_eq!(
            super::disabled_action_names(&[seg::SEQ_ADJUST_ACTION, seg::NAT_ACTION]),
            "nat, seq-adjust"
        );
    }

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
            line(&["affinity-agent", "tables"]).as_deref(),
            Some("tables")
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
