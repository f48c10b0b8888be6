//! The thin event loop around [`ManagerCore`]: a UDP socket, timers,
//! signals, the control socket, metrics and health results.
//!
//! The loop sleeps in poll(2) until the core's next timer
//! ([`ManagerCore::poll_timeout`]), a datagram, or a wake-up: the threads
//! that queue events (control socket, metrics, health) and the signals
//! write a byte to a Unix stream pair the loop polls with the UDP socket.

use crate::config::Config;
use crate::core::{Command, ManagerCore, Outgoing};
use crate::health::{self, parking_lot_free::Shared, HealthResult};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

enum Event {
    Health(HealthResult),
    Command(Command, mpsc::Sender<Result<String, String>>),
}

/// Wakes the daemon's loop from its sleep (one byte on the wake-up stream).
/// Cheap to clone; safe to use from any thread.
#[derive(Clone)]
pub struct Waker(Arc<UnixStream>);

impl Waker {
    /// Wakes the loop. The stream is non-blocking: when it is full, a
    /// wake-up is already pending and this one is not needed.
    pub fn wake(&self) {
        let _ = (&*self.0).write(&[1]);
    }
}

/// Queues events for the loop and wakes it.
#[derive(Clone)]
struct EventSender {
    tx: mpsc::Sender<Event>,
    waker: Waker,
}

impl EventSender {
    /// False when the loop is gone.
    fn send(&self, ev: Event) -> bool {
        let ok = self.tx.send(ev).is_ok();
        self.waker.wake();
        ok
    }
}

/// Longest sleep (ms) without a datagram, an event or a due timer: bounds
/// how late a timer can run should the core's clock and ours disagree.
const MAX_SLEEP_MS: u64 = 1000;
/// Shortest sleep (ms), poll(2)'s resolution: a timer due sooner is run
/// up to this late rather than spun for.
const MIN_SLEEP_MS: u64 = 1;

/// How long to sleep (ms) from `now` until the core's next timer
/// `deadline` (both ns), within [`MIN_SLEEP_MS`, `MAX_SLEEP_MS`].
fn sleep_ms(deadline: u64, now: u64) -> i32 {
    deadline
        .saturating_sub(now)
        .div_ceil(1_000_000)
        .clamp(MIN_SLEEP_MS, MAX_SLEEP_MS) as i32
}

/// A bound manager, ready to run.
pub struct Daemon {
    core: ManagerCore,
    socket: UdpSocket,
    start: Instant,
    events: EventSender,
    rx: mpsc::Receiver<Event>,
    /// The read end of the wake-up stream (non-blocking).
    wake_rx: UnixStream,
    config_path: Option<PathBuf>,
    shared_cfg: Arc<Shared<Config>>,
    pub sent: u64,
    send_errors: u64,
    reloads_succeeded: u64,
    reloads_failed: u64,
    /// Control actions logged at info, at most a burst a second.
    action_log: crate::logging::RateLimit,
}

/// Sizes the service-message socket's kernel receive buffer to `bytes`
/// (`[manager] receive_buffer`, at bind and on reload); a smaller grant
/// (capped by `net.core.rmem_max`) or an error is logged.
fn size_receive_buffer(socket: &UdpSocket, bytes: u32) {
    let asked = bytes as usize;
    match affinity_daemon_common::udp::set_receive_buffer(socket, asked) {
        // Linux reports double what it keeps for data.
        Ok(granted) if granted >= asked => {}
        granted => tracing::warn!(
            granted = ?granted.ok(),
            asked,
            "service-message socket receive buffer smaller than receive_buffer (raise net.core.rmem_max)"
        ),
    }
}

/// Datagrams handled at most per round of the loop (then timers, health
/// results and commands run): bounds how late they can be under a flood.
const ROUND_HANDLED: usize = 1024;
/// Datagrams read at most per round: four times what a round handles, so
/// the manager's receive queue, not the socket buffer, drops (and counts)
/// what it cannot handle, while a flood cannot keep one round reading.
const ROUND_READS: usize = 4 * ROUND_HANDLED;

/// How long the loop keeps polling after the last datagram before sleeping.
const BUSY_POLL: Duration = Duration::from_micros(200);

impl Daemon {
    /// Binds the service-message socket (`listen` may use port 0).
    pub fn bind(cfg: Config, config_path: Option<PathBuf>) -> std::io::Result<Daemon> {
        if cfg.auth.keys.is_empty() {
            tracing::warn!("no [auth] keys: OPEN mode, anyone on the control LAN can speak for any agent; use it on trusted LANs only (api/PROTOCOL.md, Security)");
        }
        let socket = UdpSocket::bind(cfg.manager.listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("service messages on {}: {e}", cfg.manager.listen),
            )
        })?;
        let ifaddr = cfg
            .agents
            .multicast_interface
            .unwrap_or(*cfg.manager.listen.ip());
        if cfg.agents.multicast_group.is_some() && !ifaddr.is_unspecified() {
            let _ = socket2::SockRef::from(&socket).set_multicast_if_v4(&ifaddr);
        }
        socket_multicast_ttl(&socket);
        size_receive_buffer(&socket, cfg.manager.receive_buffer);
        let mut cfg = cfg;
        if let Ok(SocketAddr::V4(a)) = socket.local_addr() {
            cfg.manager.listen = SocketAddrV4::new(*cfg.manager.listen.ip(), a.port());
        }
        let (tx, rx) = mpsc::channel();
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let start = Instant::now();
        Ok(Daemon {
            shared_cfg: Arc::new(Shared::new(cfg.clone())),
            core: ManagerCore::new(cfg, 0),
            socket,
            start,
            events: EventSender {
                tx,
                waker: Waker(Arc::new(wake_tx)),
            },
            rx,
            wake_rx,
            config_path,
            sent: 0,
            send_errors: 0,
            reloads_succeeded: 0,
            reloads_failed: 0,
            action_log: crate::logging::RateLimit::new(10),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A handle that wakes [`Self::run`] from its sleep, e.g. after setting
    /// its `stop` flag from another thread.
    pub fn waker(&self) -> Waker {
        self.events.waker.clone()
    }

    /// Wakes the loop on each of `signals` (after their flag handlers,
    /// which must be registered first so the loop sees the flag).
    pub fn wake_on_signals(&self, signals: &[libc::c_int]) -> std::io::Result<()> {
        for &sig in signals {
            let w = self.events.waker.0.try_clone()?;
            signal_hook::low_level::pipe::register(sig, w)?;
        }
        Ok(())
    }

    /// Empties the wake-up stream (before the loop looks at flags and
    /// events, so a wake-up arriving meanwhile is not lost).
    fn drain_wakes(&mut self) {
        let mut buf = [0u8; 64];
        // Bounded: the stream holds at most its buffer; 64 reads is plenty.
        for _ in 0..64 {
            match self.wake_rx.read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                _ => break,
            }
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn send(&mut self, out: Vec<Outgoing>) {
        let gso = self.core.config().manager.udp_gso;
        let (sent, failed) = crate::batch_io::send_all(&self.socket, &out, gso);
        self.sent += sent;
        self.send_errors += failed;
    }

    /// Starts the control socket, metrics and health threads.
    pub fn start_services(&self, stop: &Arc<AtomicBool>) -> std::io::Result<()> {
        let cfg = self.shared_cfg.get();
        let path = cfg.manager.control_socket.clone();
        // A socket file nobody answers on is a leftover (a crash): replace
        // it. One that answers belongs to a running manager: leave it.
        if UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "control socket {}: another manager answers there",
                    path.display()
                ),
            ));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
        })?;
        let tx = self.events.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                // One thread per connection, with timeouts and a line
                // limit: an idle or endless client must not block
                // `status` and `set-weight` for everyone else.
                let tx = tx.clone();
                std::thread::spawn(move || serve_control(&conn, &tx));
            }
        });
        if let Some(addr) = cfg.manager.metrics {
            let server = tiny_http::Server::http(addr).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("metrics {addr}: {e}"),
                )
            })?;
            let tx = self.events.clone();
            std::thread::spawn(move || {
                crate::metrics::serve(server, || {
                    let (rtx, rrx) = mpsc::channel();
                    if !tx.send(Event::Command(Command::Metrics, rtx)) {
                        return None;
                    }
                    rrx.recv_timeout(Duration::from_secs(5)).ok()?.ok()
                })
            });
        }
        let (htx, hrx) = mpsc::channel();
        let shared = self.shared_cfg.clone();
        let s2 = stop.clone();
        std::thread::spawn(move || health::run(shared, htx, s2));
        let tx = self.events.clone();
        std::thread::spawn(move || {
            for r in hrx {
                if !tx.send(Event::Health(r)) {
                    return;
                }
            }
        });
        Ok(())
    }

    /// Runs until `stop` is set; `reload` is checked and cleared each round.
    /// After traffic it keeps polling the socket for `BUSY_POLL` before
    /// sleeping in poll(2): under load, the next burst usually arrives within
    /// that time, and sleeping and being woken costs more than the flow.
    /// The sleep lasts until the core's next timer (see `sleep_ms` for the
    /// bounds), a datagram, or a [`Waker`]; whoever sets `stop` or `reload`
    /// from elsewhere wakes the loop (signals: [`Self::wake_on_signals`])
    /// or waits up to `MAX_SLEEP_MS`.
    pub fn run(&mut self, stop: &AtomicBool, reload: &AtomicBool) {
        let mut batch = crate::batch_io::RecvBatch::default();
        let mut queue = crate::batch_io::RecvQueue::new(
            self.core.config().manager.receive_queue as usize,
            crate::config::RECEIVE_QUEUE_BYTES,
        );
        let mut out = Vec::new();
        // Non-blocking for good: a round drains everything queued, then
        // waits in poll(2) for at most the next timer.
        let _ = self.socket.set_nonblocking(true);
        let mut busy_until = Instant::now();
        // The kernel's drops on our socket (receive buffer full), checked
        // once a second: loss is counted and visible (rx-kernel-dropped).
        let port = self.core.config().manager.listen.port();
        let mut kernel_drops = affinity_daemon_common::udp::kernel_drops(port).unwrap_or(0);
        let mut drops_checked = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if reload.swap(false, Ordering::Relaxed) {
                self.reload();
                let limit = self.core.config().manager.receive_queue as usize;
                queue.set_limits(limit, crate::config::RECEIVE_QUEUE_BYTES);
                size_receive_buffer(&self.socket, self.core.config().manager.receive_buffer);
            }
            if drops_checked.elapsed() >= Duration::from_secs(1) {
                drops_checked = Instant::now();
                if let Some(d) = affinity_daemon_common::udp::kernel_drops(port) {
                    if d > kernel_drops {
                        let now = self.now();
                        self.core.receive_kernel_dropped(now, d - kernel_drops);
                    }
                    kernel_drops = d;
                }
            }
            while let Ok(ev) = self.rx.try_recv() {
                match ev {
                    Event::Health(r) => {
                        let now = self.now();
                        let out = self.core.health_check(
                            now,
                            &r.service,
                            r.backend,
                            r.ok,
                            r.failure.as_deref(),
                            Some(r.latency_us),
                        );
                        self.send(out);
                    }
                    Event::Command(Command::Metrics, reply) => {
                        let now = self.now();
                        let stats = self.stats();
                        let _ = reply.send(Ok(crate::metrics::encode(
                            &self.core.status_report(now),
                            Some(&stats),
                        )));
                    }
                    Event::Command(c, reply) => {
                        let now = self.now();
                        let line = c.is_action().then(|| c.to_string());
                        let answer = self.core.command(c, now);
                        if let Some(line) = line {
                            match &answer {
                                Ok(a) => {
                                    if self.action_log.allow(now) {
                                        tracing::info!(command = %line, result = %a.trim_end(), "control action");
                                    }
                                }
                                Err(e) => {
                                    if self.action_log.allow(now) {
                                        tracing::warn!(command = %line, error = %e, "control action refused");
                                    }
                                }
                            }
                        }
                        let _ = reply.send(answer);
                    }
                }
            }
            let now = self.now();
            if now >= self.core.poll_timeout() {
                let out = self.core.tick(now);
                self.send(out);
            }
            // Read what arrived (the oldest up to the queue's limits kept,
            // the newest past them dropped and counted), then handle at
            // most a round's share, so timers, health results and commands
            // get their turn under a flood.
            let got = queue.fill(&self.socket, &mut batch, ROUND_READS);
            let dropped = queue.take_dropped();
            if dropped > 0 {
                let now = self.now();
                let limit = queue.limits().0;
                self.core.receive_queue_dropped(now, dropped, limit);
            }
            let mut handled = 0;
            while handled < ROUND_HANDLED && !queue.is_empty() {
                let now = self.now();
                for _ in 0..crate::batch_io::BATCH {
                    let Some((from, bytes)) = queue.pop() else {
                        break;
                    };
                    out.extend(self.core.handle_datagram(now, from, &bytes));
                    handled += 1;
                }
                // The answers to a batch go out together.
                self.send(std::mem::take(&mut out));
            }
            if got > 0 || !queue.is_empty() {
                busy_until = Instant::now() + BUSY_POLL;
            } else if Instant::now() >= busy_until {
                let ms = sleep_ms(self.core.poll_timeout(), self.now());
                crate::batch_io::wait_readable_either(&self.socket, &self.wake_rx, ms);
                self.drain_wakes();
            } else {
                std::hint::spin_loop();
            }
        }
        let out = self.core.shutdown();
        self.send(out);
        let path = &self.core.config().manager.control_socket;
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "control socket not removed");
        }
        tracing::info!("stopped; wildcards deleted, control socket removed");
    }

    /// The daemon's own figures for the metrics endpoint.
    pub fn stats(&self) -> crate::metrics::DaemonStats {
        crate::metrics::DaemonStats {
            uptime_s: self.start.elapsed().as_secs_f64(),
            reloads_succeeded: self.reloads_succeeded,
            reloads_failed: self.reloads_failed,
            datagrams_sent: self.sent,
            send_errors: self.send_errors,
        }
    }

    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        match Config::load(&path) {
            Ok(cfg) => {
                // The core refuses (and logs) a change of `listen` or
                // `metrics`, keeping the sockets' values: share what it kept.
                let now = self.now();
                let out = self.core.reload(cfg, now);
                self.shared_cfg.set(self.core.config().clone());
                self.send(out);
                self.reloads_succeeded += 1;
                tracing::info!(path = %path.display(), flows = self.core.flow_count(), "configuration reloaded; established flows kept");
            }
            Err(errs) => {
                self.reloads_failed += 1;
                for e in errs {
                    tracing::error!("reload refused: {}", e.located(&path));
                }
            }
        }
    }

    pub fn core(&self) -> &ManagerCore {
        &self.core
    }
}

/// Longest control-socket command line read (bytes, newline included);
/// a longer one is refused without reading further.
pub const MAX_CONTROL_LINE: u64 = 4096;
/// How long a control-socket client may take to send its line or read
/// the answer.
pub const CONTROL_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers one control-socket connection: one command line of at most
/// [`MAX_CONTROL_LINE`] bytes within [`CONTROL_IO_TIMEOUT`]; the input is
/// never echoed back (a bad line gets a fixed error).
fn serve_control(conn: &UnixStream, tx: &EventSender) {
    let _ = conn.set_read_timeout(Some(CONTROL_IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(CONTROL_IO_TIMEOUT));
    let mut raw = Vec::new();
    let mut r = BufReader::new(conn.take(MAX_CONTROL_LINE));
    if r.read_until(b'\n', &mut raw).is_err() {
        return;
    }
    let answer = if raw.last() != Some(&b'\n') && raw.len() as u64 >= MAX_CONTROL_LINE {
        Err(format!("command line longer than {MAX_CONTROL_LINE} bytes"))
    } else {
        match std::str::from_utf8(&raw).map(|l| Command::parse(l.trim())) {
            Ok(Ok(cmd)) => {
                let (rtx, rrx) = mpsc::channel();
                if !tx.send(Event::Command(cmd, rtx)) {
                    return;
                }
                rrx.recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|_| Err("manager busy".into()))
            }
            // The parser's message quotes the line; quote at most a
            // short prefix of it (no echo of arbitrary input).
            Ok(Err(e)) => Err(e.chars().take(300).collect()),
            Err(_) => Err("command line is not UTF-8".into()),
        }
    };
    let mut w = conn;
    let _ = match answer {
        Ok(s) => w.write_all(s.as_bytes()),
        Err(e) => w.write_all(format!("error: {e}\n").as_bytes()),
    };
}

fn socket_multicast_ttl(s: &UdpSocket) {
    let _ = s.set_multicast_ttl_v4(8);
}

#[cfg(test)]
mod tests {
    use super::{sleep_ms, Daemon, MAX_SLEEP_MS, MIN_SLEEP_MS};
    use crate::Config;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn config(listen: &str, socket: &std::path::Path) -> Config {
        Config::parse(&format!(
            "[manager]\nlisten = \"{listen}\"\ncontrol_socket = \"{}\"\n[agents]\nmulticast_group = \"239.255.16.37\"\n",
            socket.display()
        ))
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_bind_error_names_the_address() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let sock = std::env::temp_dir().join(format!("affinity-bind-{}.sock", std::process::id()));
        let err = Daemon::bind(config(&addr, &sock), None)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains(&format!("service messages on {addr}: "))),
            "{err:?}"
        );
    }

    #[test]
    fn a_clean_stop_removes_the_control_socket_and_a_running_one_is_not_taken() {
        let sock = std::env::temp_dir().join(format!("affinity-stop-{}.sock", std::process::id()));
        let mut d = Daemon::bind(config("127.0.0.1:0", &sock), None).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        d.start_services(&stop).unwrap();
        assert!(sock.exists());
        let second = Daemon::bind(config("127.0.0.1:0", &sock), None).unwrap();
        let err = second.start_services(&stop).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("another manager answers there")),
            "{err:?}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        d.run(&stop, &AtomicBool::new(false));
        assert!(!sock.exists(), "control socket removed on a clean stop");
    }

    #[test]
    fn sleeps_until_the_next_timer_within_bounds() {
        let ms = 1_000_000;
        assert_eq!(sleep_ms(250 * ms, 0), 250);
        assert_eq!(sleep_ms(250 * ms + 1, 0), 251, "rounded up: never early");
        assert_eq!(sleep_ms(5, 10), MIN_SLEEP_MS as i32, "overdue: shortest");
        assert_eq!(sleep_ms(u64::MAX, 0), MAX_SLEEP_MS as i32);
    }
}
