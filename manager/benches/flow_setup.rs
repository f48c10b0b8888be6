//! New-flow setup rate on loopback: simulated agents send SYN interest
//! matches (with the packet, as a real agent does) as fast as the manager
//! answers; the manager runs its real daemon loop on one thread. Also the
//! decision core alone on the same messages, without sockets.
//! Prints `name value unit` lines and appends them to target/bench-figures.txt.

#[path = "../../forwarding-agent/benches/figures/mod.rs"]
mod figures;

use affinity_api::{
    interest, AffinityIdentifier, AffinityKey, FixedAffinity, IdentityInfo, MessageBuilder,
    MessageType, Segment, ServiceMessage,
};
use affinity_manager::batch_io::{send_all, RecvBatch};
use affinity_manager::daemon::Daemon;
use affinity_manager::{Config, ManagerCore};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FLOWS: u32 = 200_000;
const WINDOW: usize = 64;
const LATENCY_FLOWS: usize = 20_000;

fn syn_packet(client: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&client.octets());
    p[16..20].copy_from_slice(&[203, 0, 113, 10]);
    p[20..22].copy_from_slice(&port.to_be_bytes());
    p[22..24].copy_from_slice(&80u16.to_be_bytes());
    p[32] = 0x50;
    p[33] = 0x02;
    p
}

fn interest_match(seq: u64, i: u32) -> Vec<u8> {
    let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i >> 14));
    let port = 1024 + (i & 0x3fff) as u16;
    let key = AffinityKey {
        protocol: affinity_forwarding_agent::wire::TCP,
        src_addr: client,
        dst_addr: Ipv4Addr::new(203, 0, 113, 10),
        src_port: port,
        dst_port: 80,
    };
    let mut b = MessageBuilder::new(MessageType::InterestMatchWildcard, seq);
    b.push(Segment::AffinityIdentifier(AffinityIdentifier {
        id: 1 << 16,
        reason: interest::SYN | interest::ALL,
    }));
    b.push(Segment::FixedAffinity(FixedAffinity {
        key,
        ..Default::default()
    }));
    b.push(Segment::FaInterestData(&i.to_be_bytes()));
    b.push(Segment::IdentityInfo(IdentityInfo {
        address: Ipv4Addr::LOCALHOST,
        host_name: "bench-agent",
    }));
    b.push(Segment::IpPacket(&syn_packet(client, port)));
    b.finish().unwrap()
}

/// Sends `msgs` keeping `window` outstanding, a batch per system call as a
/// VPP agent punting a frame's SYNs would; (flows/s, latencies in ns, lost).
fn run(
    agent: &UdpSocket,
    addr: SocketAddrV4,
    msgs: &[Vec<u8>],
    window: usize,
) -> (f64, Vec<u64>, u64) {
    let mut sent_at = vec![Instant::now(); msgs.len()];
    let mut lat: Vec<u64> = Vec::with_capacity(msgs.len());
    let mut batch = RecvBatch::default();
    let (mut next, mut outstanding, mut lost) = (0usize, 0usize, 0u64);
    let base = u32::from_be_bytes(
        ServiceMessage::parse(&msgs[0])
            .ok()
            .and_then(|m| m.fa_interest_data())
            .and_then(|d| d.try_into().ok())
            .unwrap_or([0; 4]),
    ) as usize;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let mut idle_since = Instant::now();
    while (next < msgs.len() || outstanding > 0) && Instant::now() < deadline {
        let room = (window - outstanding).min(msgs.len() - next);
        if room > 0 {
            let now = Instant::now();
            let out: Vec<(SocketAddrV4, Vec<u8>)> = msgs[next..next + room]
                .iter()
                .map(|m| (addr, m.clone()))
                .collect();
            for t in &mut sent_at[next..next + room] {
                *t = now;
            }
            send_all(agent, &out, false);
            next += room;
            outstanding += room;
        }
        match batch.recv(agent) {
            Ok(_) => {
                idle_since = Instant::now();
                for (_, bytes) in batch.iter() {
                    let Ok(m) = ServiceMessage::parse(bytes) else {
                        continue;
                    };
                    if let Some(d) = m.fa_interest_data() {
                        let i = (u32::from_be_bytes(d.try_into().unwrap_or([0; 4])) as usize)
                            .wrapping_sub(base);
                        if let Some(t) = sent_at.get(i) {
                            lat.push(t.elapsed().as_nanos() as u64);
                        }
                        outstanding = outstanding.saturating_sub(1);
                    }
                }
            }
            Err(_) if idle_since.elapsed() > Duration::from_millis(200) => {
                lost += outstanding as u64;
                outstanding = 0;
                idle_since = Instant::now();
            }
            // Poll like a VPP worker's input node does (bounded by the idle
            // timeout above and the run's deadline).
            Err(_) => std::hint::spin_loop(),
        }
    }
    (lat.len() as f64 / start.elapsed().as_secs_f64(), lat, lost)
}

/// CPU time of another thread (pthread_getcpuclockid).
struct ThreadCpu(libc::clockid_t);

impl ThreadCpu {
    fn of<T>(h: &std::thread::JoinHandle<T>) -> Self {
        use std::os::unix::thread::JoinHandleExt;
        let mut id: libc::clockid_t = 0;
        // SAFETY: FFI; the thread is alive (joined only later) and `id` is
        // a valid out pointer.
        unsafe { libc::pthread_getcpuclockid(h.as_pthread_t(), &mut id) };
        ThreadCpu(id)
    }
    fn seconds(&self) -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: FFI clock_gettime with a valid out pointer.
        unsafe { libc::clock_gettime(self.0, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
}

/// Runs the real daemon loop on its own thread against the simulated
/// agent: throughput, per manager core, latency percentiles.
fn daemon_figures(cfg: Config) -> Vec<(&'static str, f64, &'static str)> {
    let mut daemon = Daemon::bind(cfg, None).expect("bind");
    let addr = daemon.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let waker = daemon.waker();
    let handle = std::thread::spawn(move || {
        daemon.run(&s2, &reload);
        daemon
    });
    let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
    agent.set_nonblocking(true).unwrap();
    let SocketAddr::V4(addr) = addr else {
        panic!("manager bound to {addr}")
    };
    let msgs: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| interest_match(i as u64 + 1, i))
        .collect();
    // Throughput: keep WINDOW interest matches outstanding. The agent side
    // runs on the other core; the manager thread's own CPU time gives the
    // rate per manager core.
    let manager_cpu = ThreadCpu::of(&handle);
    let cpu0 = manager_cpu.seconds();
    let (rate, answered, lost) = run(
        &agent,
        addr,
        &msgs[..FLOWS as usize - LATENCY_FLOWS],
        WINDOW,
    );
    let cpu = manager_cpu.seconds() - cpu0;
    let per_core = answered.len() as f64 / cpu.max(1e-9);
    // Added latency: one at a time, so queueing does not count.
    let (_, mut lat, lost2) = run(&agent, addr, &msgs[FLOWS as usize - LATENCY_FLOWS..], 1);
    let lost = lost + lost2;
    stop.store(true, Ordering::Relaxed);
    waker.wake();
    let daemon = handle.join().unwrap();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    vec![
        ("manager_flow_setup_rate", rate, "flows/s"),
        (
            "manager_flow_setup_per_manager_core_second",
            per_core,
            "flows/s",
        ),
        (
            "manager_thread_cpu_busy",
            cpu * rate / answered.len().max(1) as f64,
            "cores",
        ),
        ("manager_flow_setup_p50", pct(0.50), "us"),
        ("manager_flow_setup_p99", pct(0.99), "us"),
        ("manager_flow_setup_lost", lost as f64, "flows"),
        (
            "manager_flows_installed",
            daemon.core().flow_count() as f64,
            "flows",
        ),
    ]
}

fn main() {
    // No half-open limit: the bench's SYN flows get no activity reports,
    // so all FLOWS stay half-open (the limit is tested in tests/overload.rs).
    let sock = std::env::temp_dir().join(format!("affinity-bench-{}.sock", std::process::id()));
    let cfg = Config::parse(&format!(
        "[manager]\nlisten = \"127.0.0.1:0\"\ncontrol_socket = \"{}\"\nfixed_ttl = 300\nmax_half_open_flows = 0\n[agents]\nunicast = []\n[[service]]\nname = \"web\"\nvirtual = \"203.0.113.10:80\"\nalgorithm = \"maglev\"\n[[service.backend]]\naddress = \"198.51.100.1:80\"\n[[service.backend]]\naddress = \"198.51.100.2:80\"\n[[service.backend]]\naddress = \"198.51.100.3:80\"\n",
        sock.display()
    ))
    .expect("bench config");
    let mut cfg = cfg;
    cfg.agents.multicast_group = None;
    // The decision core alone (no sockets), on the same messages: what the
    // manager costs per flow apart from the kernel's UDP path.
    let core_ns = {
        let msgs: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| interest_match(i as u64 + 1, i))
            .collect();
        let mut core = ManagerCore::new(cfg.clone(), 0);
        let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1637);
        let t = Instant::now();
        let mut answers = 0usize;
        for (i, m) in msgs.iter().enumerate() {
            answers += core.handle_datagram(i as u64 * 1000, from, m).len();
        }
        assert_eq!(answers, msgs.len(), "every interest match answered");
        t.elapsed().as_nanos() as f64 / msgs.len() as f64
    };
    let mut figures = vec![(
        "manager_core_decision_ns_per_flow".to_string(),
        core_ns,
        "ns",
    )];
    // The daemon as configured by default (UDP GSO on), then without it.
    for (suffix, gso) in [("", true), ("_without_udp_gso", false)] {
        let mut cfg = cfg.clone();
        cfg.manager.udp_gso = gso;
        for (n, v, u) in daemon_figures(cfg) {
            figures.push((format!("{n}{suffix}"), v, u));
        }
    }
    let _ = std::fs::remove_file(&sock);
    figures::report(figures, 1);
}
