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
use std::path::{Path, PathBuf};
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
}

/// How long the loop keeps polling after the last datagram before sleeping.
const BUSY_POLL: Duration = Duration::from_micros(200);

impl Daemon {
    /// Binds the service-message socket (`listen` may use port 0).
    pub fn bind(cfg: Config, config_path: Option<PathBuf>) -> std::io::Result<Daemon> {
        let socket = UdpSocket::bind(cfg.manager.listen)?;
        let ifaddr = cfg
            .agents
            .multicast_interface
            .unwrap_or(*cfg.manager.listen.ip());
        if cfg.agents.multicast_group.is_some() && !ifaddr.is_unspecified() {
            let _ = socket2::SockRef::from(&socket).set_multicast_if_v4(&ifaddr);
        }
        socket_multicast_ttl(&socket);
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
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
        })?;
        let tx = self.events.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut line = String::new();
                let mut r = BufReader::new(&conn);
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let answer = match Command::parse(line.trim()) {
                    Ok(cmd) => {
                        let (rtx, rrx) = mpsc::channel();
                        if !tx.send(Event::Command(cmd, rtx)) {
                            return;
                        }
                        rrx.recv_timeout(Duration::from_secs(5))
                            .unwrap_or_else(|_| Err("manager busy".into()))
                    }
                    Err(e) => Err(e),
                };
                let mut w = &conn;
                let _ = match answer {
                    Ok(s) => w.write_all(s.as_bytes()),
                    Err(e) => w.write_all(format!("error: {e}\n").as_bytes()),
                };
            }
        });
        if let Some(addr) = cfg.manager.metrics {
            let l = std::net::TcpListener::bind(addr)?;
            let tx = self.events.clone();
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut line = String::new();
                    let _ = BufReader::new(&conn).read_line(&mut line);
                    let (rtx, rrx) = mpsc::channel();
                    if !tx.send(Event::Command(Command::Metrics, rtx)) {
                        return;
                    }
                    let body = rrx
                        .recv_timeout(Duration::from_secs(5))
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    let mut w = &conn;
                    let _ = write!(w, "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{}", body.len(), body);
                }
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
    /// After traffic it keeps polling the socket for [`BUSY_POLL`] before
    /// sleeping in poll(2): under load, the next burst usually arrives within
    /// that time, and sleeping and being woken costs more than the flow.
    /// The sleep lasts until the core's next timer (see [`sleep_ms`] for the
    /// bounds), a datagram, or a [`Waker`]; whoever sets `stop` or `reload`
    /// from elsewhere wakes the loop (signals: [`Self::wake_on_signals`])
    /// or waits up to [`MAX_SLEEP_MS`].
    pub fn run(&mut self, stop: &AtomicBool, reload: &AtomicBool) {
        let mut batch = crate::batch_io::RecvBatch::default();
        let mut out = Vec::new();
        // Non-blocking for good: a round drains everything queued, then
        // waits in poll(2) for at most the next timer.
        let _ = self.socket.set_nonblocking(true);
        let mut busy_until = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if reload.swap(false, Ordering::Relaxed) {
                self.reload();
            }
            while let Ok(ev) = self.rx.try_recv() {
                match ev {
                    Event::Health(r) => {
                        let out = self.core.health(&r.service, r.backend, r.ok);
                        self.send(out);
                    }
                    Event::Command(c, reply) => {
                        let now = self.now();
                        let _ = reply.send(self.core.command(c, now));
                    }
                }
            }
            let now = self.now();
            if now >= self.core.poll_timeout() {
                let out = self.core.tick(now);
                self.send(out);
            }
            let mut got = 0;
            while got < 1024 {
                match batch.recv(&self.socket) {
                    Ok(n) => {
                        let now = self.now();
                        for (from, bytes) in batch.iter() {
                            if let Some(from) = from {
                                out.extend(self.core.handle_datagram(now, from, bytes));
                            }
                        }
                        // The answers to a batch go out together.
                        self.send(std::mem::take(&mut out));
                        got += n.max(1);
                    }
                    Err(_) => break,
                }
            }
            if got > 0 {
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
        tracing::info!("stopped; wildcards deleted");
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
                tracing::info!(path = %path.display(), flows = self.core.flow_count(), "configuration reloaded; established flows kept");
            }
            Err(errs) => {
                for e in errs {
                    tracing::error!(path = %path.display(), "reload refused: {e}");
                }
            }
        }
    }

    pub fn core(&self) -> &ManagerCore {
        &self.core
    }
}

fn socket_multicast_ttl(s: &UdpSocket) {
    let _ = s.set_multicast_ttl_v4(8);
}

/// Sends one command line to a running manager's control socket.
pub fn client(path: &Path, line: &str) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is the manager running?)", path.display()),
        )
    })?;
    s.write_all(format!("{line}\n").as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{sleep_ms, MAX_SLEEP_MS, MIN_SLEEP_MS};

    #[test]
    fn sleeps_until_the_next_timer_within_bounds() {
        let ms = 1_000_000;
        assert_eq!(sleep_ms(250 * ms, 0), 250);
        assert_eq!(sleep_ms(250 * ms + 1, 0), 251, "rounded up: never early");
        assert_eq!(sleep_ms(5, 10), MIN_SLEEP_MS as i32, "overdue: shortest");
        assert_eq!(sleep_ms(u64::MAX, 0), MAX_SLEEP_MS as i32);
    }
}
