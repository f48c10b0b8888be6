//! Backend health checks (TCP connect, optional HTTP GET), on their own
//! thread, feeding results to the core as events.

use crate::config::Config;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// One probe result.
#[derive(Debug, Clone)]
pub struct HealthResult {
    pub service: String,
    pub backend: SocketAddrV4,
    pub ok: bool,
    /// Why it failed (see [`probe_detail`]); `None` when it passed.
    pub failure: Option<String>,
    /// How long the probe took (µs).
    pub latency_us: u64,
}

/// Probes a backend once: true when it passed.
pub fn probe(
    backend: SocketAddrV4,
    kind: &str,
    path: &str,
    expect: u16,
    timeout: Duration,
) -> bool {
    probe_detail(backend, kind, path, expect, timeout).is_ok()
}

/// A connect error as a short reason: `refused`, `timeout`,
/// `unreachable`, else the system's message.
fn connect_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout".into(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable".into(),
        _ => e.to_string(),
    }
}

/// Probes a backend once (TCP connect within `timeout`; with `kind`
/// `http`, then `GET path` and the status line's code must be `expect`).
/// Errors: why it failed — `refused`, `timeout`, `unreachable`,
/// `http send failed`, `http no status line`, `http status N`.
pub fn probe_detail(
    backend: SocketAddrV4,
    kind: &str,
    path: &str,
    expect: u16,
    timeout: Duration,
) -> Result<(), String> {
    let mut s =
        TcpStream::connect_timeout(&backend.into(), timeout).map_err(|e| connect_reason(&e))?;
    if kind != "http" {
        return Ok(());
    }
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: {backend}\r\nUser-Agent: affinity-manager\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return Err("http send failed".into());
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(c) if c == expect => Ok(()),
        Some(c) => Err(format!("http status {c}")),
        None if n == 0 => Err("timeout (no http answer)".into()),
        None => Err("http no status line".into()),
    }
}

/// Runs health checks until `stop`; `config` is re-read every round so a
/// reload takes effect.
pub fn run(
    config: Arc<parking_lot_free::Shared<Config>>,
    tx: mpsc::Sender<HealthResult>,
    stop: Arc<AtomicBool>,
) {
    let mut next: std::collections::HashMap<(String, SocketAddrV4), Instant> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        let cfg = config.get();
        let now = Instant::now();
        for s in &cfg.services {
            let Some(h) = &s.health else { continue };
            for b in &s.backends {
                let k = (s.name.clone(), b.address);
                if next.get(&k).is_some_and(|t| *t > now) {
                    continue;
                }
                next.insert(k, now + Duration::from_millis(h.interval_ms));
                let t0 = Instant::now();
                let r = probe_detail(
                    b.address,
                    &h.kind,
                    &h.path,
                    h.expect,
                    Duration::from_millis(h.timeout_ms),
                );
                if tx
                    .send(HealthResult {
                        service: s.name.clone(),
                        backend: b.address,
                        ok: r.is_ok(),
                        failure: r.err(),
                        latency_us: t0.elapsed().as_micros().try_into().unwrap_or(u64::MAX),
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny shared cell (std only) for the current configuration.
pub mod parking_lot_free {
    use std::sync::{Arc, Mutex};

    pub struct Shared<T>(Mutex<Arc<T>>);

    impl<T> Shared<T> {
        pub fn new(v: T) -> Self {
            Shared(Mutex::new(Arc::new(v)))
        }
        pub fn get(&self) -> Arc<T> {
            self.0
                .lock()
                .map(|g| g.clone())
                .unwrap_or_else(|p| p.into_inner().clone())
        }
        pub fn set(&self, v: T) {
            match self.0.lock() {
                Ok(mut g) => *g = Arc::new(v),
                Err(p) => *p.into_inner() = Arc::new(v),
            }
        }
    }
}
