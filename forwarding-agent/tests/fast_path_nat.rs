//! Trial 22 of the fast path's NAT as keep/set masks (`wire::PlainNat`,
//! `wire::apply_nat_plain`, `actions::PlainAction::nat`) and its fixed
//! look-up (`FixedTable::lookup_hit`, `count_hit`), against the general
//! path:
//! - `apply_nat_plain` against `apply_nat_in_place` byte for byte with any
//!   incoming checksums (not only correct ones: every one of the 65 536
//!   transport checksums for a few packets, so a computed UDP 0 and the
//!   0/0xffff pair are all met), any flags byte, any addresses and ports;
//! - whole agents, fast path on and off, with random NAT actions read from
//!   the action slots' words (edge values: 0, all ones), both directions of
//!   each NATed flow, with and without source NAT, on a table small enough
//!   that the flows share home lines and are displaced from them (so
//!   `lookup_hit` answers from either entry of the line and from the probe
//!   loop), expired flows removed by `Agent::tick` (tombstones) and some
//!   installed again, with per-flow counters: every disposition, buffer,
//!   counter and per-flow count the same.

mod common;

use affinity_api::{AffinityKey, NatAction};
use affinity_forwarding_agent::actions::{ActionSet, NatActionKey};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, Worker};
use common::{run_batch, state};
use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig, Strategy,
};
use std::net::Ipv4Addr;
use std::sync::Arc;

const SEC: u64 = 1_000_000_000;
const HEADROOM: usize = 64;

fn edge32() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => any::<u32>(),
        1 => Just(0u32),
        1 => Just(u32::MAX),
        1 => Just(0xffff_0000u32),
        1 => Just(0x0000_ffffu32),
        1 => Just(0x0000_0001u32),
        1 => Just(0xfffe_ffffu32),
    ]
}

fn edge16() -> impl Strategy<Value = u16> {
    prop_oneof![3 => any::<u16>(), 1 => Just(0u16), 1 => Just(u16::MAX), 1 => Just(1u16), 1 => Just(0xfffeu16)]
}

fn checksum16() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(0u16)),
        1 => Just(Some(0xffffu16)),
        1 => any::<u16>().prop_map(Some),
    ]
}

/// A plain TCP or UDP packet from `src:sport` to `dst:dport`, its IPv4
/// and transport checksums overwritten where given.
fn packet(
    proto: u8,
    (src, sport, dst, dport): (u32, u16, u32, u16),
    flags: u8,
    payload: usize,
    ip_csum: Option<u16>,
    l4_csum: Option<u16>,
) -> Vec<u8> {
    let data = vec![0x3c; payload];
    let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
    let mut p = if proto == wire::TCP {
        build::tcp(s, sport, d, dport, flags, 0x0102_0304, 0x0506_0708, &data)
    } else {
        build::udp(s, sport, d, dport, &data)
    };
    if let Some(c) = ip_csum {
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    if let Some(c) = l4_csum {
        let at = if proto == wire::TCP { 36 } else { 26 };
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Both NAT forms on a copy of `p`: (fast, general).
fn both(p: &[u8], nat: &NatActionKey) -> (Vec<u8>, Vec<u8>) {
    let plain = wire::parse_plain(p).expect("plain");
    let mut info = wire::parse_ipv4(p).expect("parses");
    let (mut f, mut g) = (p.to_vec(), p.to_vec());
    wire::apply_nat_in_place(&mut g, &mut info, &(*nat).into(), false).unwrap();
    wire::apply_nat_plain(&mut f, &plain, &wire::PlainNat::from(nat));
    (f, g)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any incoming checksums (wrong ones included: the data path does not
    /// verify them, so both paths must carry the same error through), any
    /// flags byte (bits above the four defined ones are ignored by both).
    #[test]
    fn plain_nat_is_the_general_nat_for_any_checksums(
        proto in prop_oneof![Just(wire::TCP), Just(wire::UDP)],
        flags in any::<u8>(),
        payload in 0usize..24,
        tuple in (edge32(), edge16(), edge32(), edge16()),
        (sa, da, sp, dp) in (edge32(), edge32(), edge16(), edge16()),
        ip_csum in checksum16(),
        l4_csum in checksum16(),
        tcp_flags in any::<u8>(),
    ) {
        let p = packet(proto, tuple, tcp_flags, payload, ip_csum, l4_csum);
        let nat = NatActionKey { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        let (f, g) = both(&p, &nat);
        prop_assert_eq!(&f, &g);
        if proto == wire::UDP && p[26..28] == [0, 0] {
            prop_assert_eq!(&f[26..28], &[0u8, 0][..], "UDP checksum 0 stays 0");
        }
        if proto == wire::UDP && p[26..28] != [0, 0] {
            prop_assert!(f[26..28] != [0, 0], "UDP checksum never computed as 0");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Every transport checksum value in, for a random packet and NAT: all
    /// 65 536 give the same bytes on both paths (so a UDP checksum whose
    /// update computes 0, sent as 0xffff, is among them, and is checked to
    /// be met).
    #[test]
    fn plain_nat_is_the_general_nat_for_every_l4_checksum(
        proto in prop_oneof![Just(wire::TCP), Just(wire::UDP)],
        flags in 0u8..16,
        tuple in (edge32(), edge16(), edge32(), edge16()),
        (sa, da, sp, dp) in (edge32(), edge32(), edge16(), edge16()),
        ip_csum in any::<u16>(),
    ) {
        let nat = NatActionKey { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        let at = if proto == wire::TCP { 36 } else { 26 };
        let mut computed_zero = 0;
        for c in 0..=u16::MAX {
            let p = packet(proto, tuple, build::TCP_ACK, 3, Some(ip_csum), Some(c));
            let (f, g) = both(&p, &nat);
            prop_assert_eq!(&f, &g, "checksum in {:#06x}", c);
            if proto == wire::UDP && c != 0 && f[at..at + 2] == [0xff, 0xff] {
                computed_zero += 1;
            }
        }
        if proto == wire::UDP {
            // 0xffff out comes from two inputs: one computing 0xffff and
            // one computing 0 (except when 0 in would be the second: kept).
            prop_assert!(computed_zero >= 1);
        }
    }
}

/// One flow's two directions: the key its packets arrive with and the
/// action applied, forward (client → service) then reverse (backend →
/// the address the forward direction's packets left with).
#[derive(Debug, Clone)]
struct Flow {
    proto: u8,
    client: (u32, u16),
    service: (u32, u16),
    backend: (u32, u16),
    /// Source NAT: the address and port the client is seen from.
    snat: Option<(u32, u16)>,
    /// Which of the forward action's flags are set besides the
    /// destination's (always translated): the rest are kept.
    dst_flags: u8,
    forward: Option<u32>,
    ttl: u32,
}

impl Flow {
    fn forward_key(&self) -> AffinityKey {
        key(self.proto, self.client, self.service)
    }

    /// The forward action's NAT and the tuple it sends on.
    fn forward_nat(&self) -> (NatActionKey, (u32, u16), (u32, u16)) {
        let dst_flags = self.dst_flags & (NatAction::DST_ADDR | NatAction::DST_PORT);
        let (s, sflags) = match self.snat {
            Some(s) => (s, NatAction::SRC_ADDR | NatAction::SRC_PORT),
            None => (self.client, 0),
        };
        let d = (
            if dst_flags & NatAction::DST_ADDR != 0 {
                self.backend.0
            } else {
                self.service.0
            },
            if dst_flags & NatAction::DST_PORT != 0 {
                self.backend.1
            } else {
                self.service.1
            },
        );
        let nat = NatActionKey {
            flags: dst_flags | sflags,
            src_addr: s.0,
            dst_addr: self.backend.0,
            src_port: s.1,
            dst_port: self.backend.1,
        };
        (nat, s, d)
    }

    /// The reverse direction's key and NAT (back to client ← service).
    fn reverse(&self) -> (AffinityKey, NatActionKey) {
        let (f, s, d) = self.forward_nat();
        let mut flags = 0;
        if f.flags & NatAction::DST_ADDR != 0 {
            flags |= NatAction::SRC_ADDR;
        }
        if f.flags & NatAction::DST_PORT != 0 {
            flags |= NatAction::SRC_PORT;
        }
        if f.flags & NatAction::SRC_ADDR != 0 {
            flags |= NatAction::DST_ADDR;
        }
        if f.flags & NatAction::SRC_PORT != 0 {
            flags |= NatAction::DST_PORT;
        }
        let nat = NatActionKey {
            flags,
            src_addr: self.service.0,
            dst_addr: self.client.0,
            src_port: self.service.1,
            dst_port: self.client.1,
        };
        (key(self.proto, d, s), nat)
    }
}

fn key(protocol: u8, src: (u32, u16), dst: (u32, u16)) -> AffinityKey {
    AffinityKey {
        protocol,
        src_addr: Ipv4Addr::from(src.0),
        dst_addr: Ipv4Addr::from(dst.0),
        src_port: src.1,
        dst_port: dst.1,
    }
}

fn endpoint() -> impl Strategy<Value = (u32, u16)> {
    (edge32(), edge16())
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        prop_oneof![Just(wire::TCP), Just(wire::UDP)],
        endpoint(),
        endpoint(),
        endpoint(),
        prop::option::of(endpoint()),
        0u8..16,
        prop_oneof![2 => Just(None), 1 => edge32().prop_map(Some)],
        prop_oneof![6 => Just(3600u32), 1 => Just(1u32)],
    )
        .prop_map(
            |(proto, client, service, backend, snat, dst_flags, forward, ttl)| Flow {
                proto,
                client,
                service,
                backend,
                snat,
                dst_flags,
                forward,
                ttl,
            },
        )
}

fn action_set(nat: NatActionKey, forward: Option<u32>) -> ActionSet {
    let base = ActionSet {
        nat: Some(nat),
        ..ActionSet::default()
    };
    match forward {
        Some(to) => ActionSet {
            dispatch_flags: affinity_api::dispatch::FORWARD,
            forward_addr: to,
            ..base
        },
        None => base,
    }
}

/// An agent with both directions of every flow installed, in a table of
/// 256 entries (the flows share its home lines).
fn agent(flows: &[Flow]) -> Arc<Agent> {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 100,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        agent_name: "fa-trial22".into(),
        per_flow_counters: true,
        ..AgentConfig::default()
    });
    install(&a, 0, flows, |_| true, None);
    a
}

/// Installs both directions of the flows `pick` takes at `now_ns`, with
/// their own TTL or `ttl`.
fn install(a: &Agent, now_ns: u64, flows: &[Flow], pick: impl Fn(usize) -> bool, ttl: Option<u32>) {
    for (_, f) in flows.iter().enumerate().filter(|(n, _)| pick(*n)) {
        let ttl = ttl.unwrap_or(f.ttl);
        let (nat, _, _) = f.forward_nat();
        let _ = a.install_fixed_local(now_ns, f.forward_key(), &action_set(nat, f.forward), ttl);
        let (rk, rnat) = f.reverse();
        let _ = a.install_fixed_local(now_ns, rk, &action_set(rnat, f.forward), ttl);
    }
}

/// One generated packet of flow `flow`, forward or reverse.
#[derive(Debug, Clone)]
struct Pkt {
    flow: usize,
    reverse: bool,
    tcp_flags: u8,
    payload: usize,
    l4_csum: Option<u16>,
}

fn pkt() -> impl Strategy<Value = Pkt> {
    (
        0usize..64,
        any::<bool>(),
        prop_oneof![
            Just(build::TCP_ACK),
            Just(build::TCP_SYN),
            Just(build::TCP_SYN | build::TCP_ACK),
            Just(build::TCP_RST),
            any::<u8>()
        ],
        0usize..40,
        checksum16(),
    )
        .prop_map(|(flow, reverse, tcp_flags, payload, l4_csum)| Pkt {
            flow,
            reverse,
            tcp_flags,
            payload,
            l4_csum,
        })
}

fn bytes_of(flows: &[Flow], g: &Pkt) -> Vec<u8> {
    let f = &flows[g.flow % flows.len()];
    let k = if g.reverse {
        f.reverse().0
    } else {
        f.forward_key()
    };
    packet(
        f.proto,
        (
            u32::from(k.src_addr),
            k.src_port,
            u32::from(k.dst_addr),
            k.dst_port,
        ),
        g.tcp_flags,
        g.payload,
        None,
        g.l4_csum,
    )
}

fn run(
    w: &mut Worker,
    now_ns: u64,
    flows: &[Flow],
    batch: &[Pkt],
) -> (Vec<Disposition>, Vec<Vec<u8>>) {
    run_batch(
        w,
        now_ns,
        HEADROOM,
        batch.iter().map(|g| (bytes_of(flows, g), false)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn nated_flows_both_ways_fast_and_general_agree(
        flows in prop::collection::vec(flow(), 1..45),
        batches in prop::collection::vec(prop::collection::vec(pkt(), 1..64), 1..5),
    ) {
        let (fa, ga) = (agent(&flows), agent(&flows));
        let (mut fw, mut gw) = (fa.worker(), ga.worker());
        gw.set_fast_path(false);
        for (n, batch) in batches.iter().enumerate() {
            // 2 s on: the 1 s flows are over.
            let now = 2 * SEC + n as u64 * 1000;
            if n == 1 {
                // The expired flows removed (tombstones, keys displaced
                // past them stay), then every third flow installed again
                // (into the tombstones, or replacing its value).
                for a in [&fa, &ga] {
                    let _ = a.tick(now);
                    install(a, now, &flows, |i| i % 3 == 0, Some(3600));
                }
            }
            let f = run(&mut fw, now, &flows, batch);
            let g = run(&mut gw, now, &flows, batch);
            prop_assert_eq!(&f.0, &g.0);
            prop_assert_eq!(&f.1, &g.1);
            prop_assert_eq!(state(&fa, &mut fw, now), state(&ga, &mut gw, now));
        }
    }
}

/// The fast path is taken in the agent test above (not only declined):
/// one flow each way with source and destination NAT, one packet each,
/// counted as fast-path hits, NATed, checksums right.
#[test]
fn the_fast_path_takes_nated_flows_both_ways() {
    let f = Flow {
        proto: wire::UDP,
        client: (0xc612_0005, 40000),
        service: (0xcb00_710a, 53),
        backend: (0xc633_6402, 5353),
        snat: Some((0xc000_0201, 0xffff)),
        dst_flags: 0xf,
        forward: None,
        ttl: 3600,
    };
    let flows = vec![f];
    let a = agent(&flows);
    let mut w = a.worker();
    let batch = [
        Pkt {
            flow: 0,
            reverse: false,
            tcp_flags: 0,
            payload: 5,
            l4_csum: None,
        },
        Pkt {
            flow: 0,
            reverse: true,
            tcp_flags: 0,
            payload: 5,
            l4_csum: None,
        },
    ];
    let (_, bufs) = run(&mut w, SEC, &flows, &batch);
    let hits = a
        .counters()
        .into_iter()
        .find(|(n, _)| n.contains("fixed") && n.contains("hit"))
        .map(|c| c.1);
    assert!(hits.is_some_and(|h| h >= 2), "{:?}", a.counters());
    let fwd = &bufs[0][HEADROOM..];
    assert_eq!(&fwd[12..16], &[192, 0, 2, 1]);
    assert_eq!(&fwd[16..20], &[198, 51, 100, 2]);
    assert_eq!(&fwd[20..24], &[0xff, 0xff, 0x14, 0xe9]);
    let rev = &bufs[1][HEADROOM..];
    assert_eq!(&rev[12..16], &[203, 0, 113, 10]);
    assert_eq!(&rev[16..20], &[198, 18, 0, 5]);
    assert_eq!(&rev[20..24], &[0, 53, 0x9c, 0x40]);
    for p in [fwd, rev] {
        let info = wire::parse_ipv4(p).unwrap();
        assert!(wire::checksum::verify_ipv4(p));
        assert!(wire::checksum::verify_l4(p, &info));
    }
}

/// The one-word corner of the one's-complement update: every address and
/// port all ones, rewritten to all zeros (and back), so the delta over the
/// fields is 0 and the sum can land on either zero; every incoming IPv4
/// and transport checksum in turn, TCP and UDP.
#[test]
fn all_ones_to_all_zeros_and_back_for_every_checksum() {
    let ones = (u32::MAX, u16::MAX, u32::MAX, u16::MAX);
    let zeros = (0, 0, 0, 0);
    for proto in [wire::TCP, wire::UDP] {
        for (tuple, to) in [(ones, 0u32), (zeros, u32::MAX)] {
            let nat = NatActionKey {
                flags: 0xf,
                src_addr: to,
                dst_addr: to,
                src_port: to as u16,
                dst_port: to as u16,
            };
            for c in 0..=u16::MAX {
                let p = packet(proto, tuple, build::TCP_ACK, 0, Some(c), Some(c));
                let (f, g) = both(&p, &nat);
                assert_eq!(f, g, "proto {proto} checksums in {c:#06x}");
            }
        }
    }
}
