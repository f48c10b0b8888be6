//! The batch loop's per-packet ring (stop 23: two fixed-size arrays of
//! parses and probes indexed `i % RING`) against an oracle that needs no
//! ring and no second run: fixed affinity `k` forwards to an address of
//! its own and rewrites the destination port to one of its own, so a
//! packet acted on with another ring slot's parse or probe comes out with
//! the wrong address, the wrong port or the wrong disposition. (The
//! differential tests, `batch_pipeline.rs` and `fast_path.rs`, compare two
//! runs of the same loop, so a fault both runs share — a counter skipped
//! in the dispatch both paths use — shows in neither.)
//!
//! Batches of every size from 1 to 300 packets (most not a multiple of the
//! 8-packet group; past 256 split into two chunks), plain packets next to
//! packets the common case's path declines (IP options, first fragments,
//! flows with no affinity, a flow forwarding to 0), with tracing on for
//! every third batch. The `Forwarded` and `DropForwardZero` counters and
//! each fixed affinity's packet count must count exactly the packets sent.

mod common;
use affinity_api::{AffinityKey, NatAction};
use affinity_forwarding_agent::actions::{ActionSet, NatActionKey};
use affinity_forwarding_agent::wire::{self, build, checksum};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, Matched, Worker};
use common::{fix_ip, run_batch, Rng, SEC};
use std::net::Ipv4Addr;
use std::sync::Arc;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const HEADROOM: usize = 128;
/// Fixed affinities installed, TCP from client ports `2000 + k`.
const FLOWS: usize = 300;
/// The flows forwarding to address 0 (dropped): every 50th.
fn drops(k: usize) -> bool {
    k % 50 == 49
}

/// Flow `k`'s forward address: 198.18.(k+1 >> 8).(k+1 & 255), network
/// order as a host integer (0 for the dropping flows).
fn forward_addr(k: usize) -> u32 {
    if drops(k) {
        0
    } else {
        u32::from(Ipv4Addr::new(198, 18, 0, 0)) + k as u32 + 1
    }
}

/// Flow `k`'s translated destination port.
fn nat_port(k: usize) -> u16 {
    10_000 + k as u16
}

fn key(k: usize) -> AffinityKey {
    AffinityKey {
        protocol: wire::TCP,
        src_addr: CLIENT,
        dst_addr: SERVER,
        src_port: 2000 + k as u16,
        dst_port: 80,
    }
}

fn agent() -> Arc<Agent> {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 4096,
        action_capacity: 1024,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        agent_name: "fa1".into(),
        ..AgentConfig::default()
    });
    for k in 0..FLOWS {
        let actions = ActionSet {
            dispatch_flags: affinity_api::dispatch::FORWARD,
            forward_addr: forward_addr(k),
            nat: Some(NatActionKey::from(NatAction {
                flags: NatAction::DST_PORT,
                src_addr: Ipv4Addr::UNSPECIFIED,
                dst_addr: Ipv4Addr::UNSPECIFIED,
                src_port: 0,
                dst_port: nat_port(k),
            })),
            ..ActionSet::default()
        };
        a.install_fixed_local(0, key(k), &actions, 3600).unwrap();
    }
    a
}

/// What one packet of a batch is.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// A plain TCP packet of flow k (the common case's path).
    Plain(usize),
    /// Flow k's packet with 4 bytes of IP options (the general path).
    Options(usize),
    /// Flow k's first fragment (the general path; not plain).
    FirstFragment(usize),
    /// A UDP packet no affinity matches (passed).
    Unknown,
}

fn shape(r: u64) -> Shape {
    let k = (r >> 8) as usize % FLOWS;
    match r % 10 {
        0..=5 => Shape::Plain(k),
        6 => Shape::Options(k),
        7 => Shape::FirstFragment(k),
        _ => Shape::Unknown,
    }
}

/// The bytes of a packet of shape `s`; `n` varies its payload length (so
/// neighbours differ in size too).
fn packet(s: Shape, n: usize) -> Vec<u8> {
    let payload = vec![0x5a; n % 37];
    let tcp = |k: usize| {
        build::tcp(
            CLIENT,
            2000 + k as u16,
            SERVER,
            80,
            build::TCP_ACK,
            7,
            9,
            &payload,
        )
    };
    match s {
        Shape::Plain(k) => tcp(k),
        Shape::Options(k) => {
            let mut p = tcp(k);
            p.splice(20..20, [1u8, 1, 1, 1]);
            p[0] = 0x46;
            let len = p.len() as u16;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            fix_ip(&mut p);
            p
        }
        Shape::FirstFragment(k) => {
            let mut p = tcp(k);
            p[4..6].copy_from_slice(&(n as u16).to_be_bytes());
            p[6] |= 0x20;
            fix_ip(&mut p);
            p
        }
        Shape::Unknown => build::udp(CLIENT, 5000, SERVER, 53, &payload),
    }
}

/// The flow a packet of shape `s` belongs to.
fn flow(s: Shape) -> Option<usize> {
    match s {
        Shape::Plain(k) | Shape::Options(k) | Shape::FirstFragment(k) => Some(k),
        Shape::Unknown => None,
    }
}

fn counter(w: &Worker, c: Counter) -> u64 {
    w.counters().0[c as usize]
}

/// Checks one batch's outcome against the oracle; the problems found.
fn check(
    size: usize,
    shapes: &[Shape],
    out: &[Disposition],
    bufs: &[Vec<u8>],
    bad: &mut Vec<String>,
) {
    for (j, ((&s, d), b)) in shapes.iter().zip(out).zip(bufs).enumerate() {
        let p = &b[HEADROOM..];
        let want = match flow(s) {
            None => Disposition::Pass,
            Some(k) if drops(k) => Disposition::Drop(Counter::DropForwardZero),
            Some(k) => Disposition::Forward(Ipv4Addr::from(forward_addr(k))),
        };
        if *d != want {
            bad.push(format!(
                "batch of {size}, packet {j} ({s:?}): {d:?}, want {want:?}"
            ));
            continue;
        }
        if let (Some(k), false) = (flow(s), drops(flow(s).unwrap_or(0))) {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let dport = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
            let sport = u16::from_be_bytes([p[ihl], p[ihl + 1]]);
            if dport != nat_port(k) || sport != 2000 + k as u16 {
                bad.push(format!(
                    "batch of {size}, packet {j} ({s:?}): ports {sport} -> {dport}, want {} -> {}",
                    2000 + k,
                    nat_port(k)
                ));
            }
            if !checksum::verify_ipv4(p) {
                bad.push(format!("batch of {size}, packet {j} ({s:?}): IP checksum"));
            }
            if let (Shape::Plain(_), Ok(info)) = (s, wire::parse_ipv4(p)) {
                if !checksum::verify_l4(p, &info) {
                    bad.push(format!("batch of {size}, packet {j} ({s:?}): TCP checksum"));
                }
            }
        }
    }
}

#[test]
fn every_packet_is_acted_on_with_its_own_ring_slot() {
    run_sizes(true);
}

/// The same with the common case's path off: every packet through the
/// general path (`Worker::dispatch`), still read through the ring.
#[test]
fn the_general_path_alone_also_reads_its_own_slot() {
    run_sizes(false);
}

/// Batches of 1..=300 packets through a worker with the common case's path
/// `fast` on or off, checked against the oracle (see the module's doc).
fn run_sizes(fast: bool) {
    let a = agent();
    let mut w = a.worker();
    w.set_fast_path(fast);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bad = Vec::new();
    let mut sent = vec![0u64; FLOWS];
    let (mut forwarded, mut dropped) = (0u64, 0u64);
    for size in 1..=300usize {
        let now = SEC + size as u64 * 1000;
        let shapes: Vec<Shape> = (0..size).map(|_| shape(rng.next())).collect();
        let tracing = size % 3 == 0;
        w.set_tracing(tracing);
        let (f0, d0) = (
            counter(&w, Counter::Forwarded),
            counter(&w, Counter::DropForwardZero),
        );
        let (out, bufs) = run_batch(
            &mut w,
            now,
            HEADROOM,
            shapes
                .iter()
                .enumerate()
                .map(|(j, &s)| (packet(s, j + size), false)),
        );
        check(size, &shapes, &out, &bufs, &mut bad);
        let (mut f, mut d) = (0, 0);
        for &s in &shapes {
            if let Some(k) = flow(s) {
                sent[k] += 1;
                if drops(k) {
                    d += 1;
                } else {
                    f += 1;
                }
            }
        }
        forwarded += f;
        dropped += d;
        let got = (
            counter(&w, Counter::Forwarded) - f0,
            counter(&w, Counter::DropForwardZero) - d0,
        );
        if got != (f, d) {
            bad.push(format!(
                "batch of {size}: counted forwarded/dropped {got:?}, sent {:?}",
                (f, d)
            ));
        }
        if tracing {
            let dec = w.decisions();
            if dec.len() != size {
                bad.push(format!("batch of {size}: {} decisions traced", dec.len()));
            }
            for (j, (&s, dcs)) in shapes.iter().zip(dec).enumerate() {
                let ok = match (flow(s), dcs.matched) {
                    (None, Matched::None) => !dcs.nat,
                    (Some(k), Matched::Fixed { .. }) => dcs.nat || drops(k),
                    _ => false,
                };
                if !ok {
                    bad.push(format!(
                        "batch of {size}, packet {j} ({s:?}): traced {dcs:?}"
                    ));
                }
            }
        }
    }
    w.set_tracing(false);
    // Each fixed affinity counted its own packets, on its own entry.
    let now = 2 * SEC;
    let rows = a.fixed_entries(now, 10_000, |_| true);
    assert_eq!(rows.len(), FLOWS);
    for r in rows {
        let k = usize::from(r.key.src_port - 2000);
        if r.packets != sent[k] {
            bad.push(format!(
                "flow {k}: its entry counted {} packets, {} sent",
                r.packets, sent[k]
            ));
        }
    }
    assert!(forwarded > 10_000 && dropped > 100, "{forwarded} {dropped}");
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );
}
