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
}

/// Probes a backend once.
pub fn probe(
    backend: SocketAddrV4,
    kind: &str,
    path: &str,
    expect: u16,
    timeout: Duration,
) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&backend.into(), timeout) else {
        return false;
    };
    if kind != "http" {
        return true;
    }
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: {backend}\r\nUser-Agent: affinity-manager\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
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
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        == Some(expect)
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
                let ok = probe(
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
                        ok,
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
