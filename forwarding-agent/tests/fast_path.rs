//! The common case's own path (`datapath::fast`) against the general one:
//! two agents with the same affinities, one with the fast path on and one
//! with it off, get the same random batches; every disposition, every
//! byte of every buffer (headroom included: punts are written there),
//! every counter, every fixed affinity's packet and byte counts and
//! handshake mark, and every message sent out of line must be the same.
//! The packets cover what the fast path takes (plain TCP and UDP on plain
//! action sets) and everything it must decline, next to it in the same
//! batch: IP options, fragments, ICMP, bad lengths, partial checksums,
//! UDP without a checksum, expired entries, action sets with statistics,
//! sequence adjust or interest, forward address 0, and flows with no
//! fixed affinity (a wildcard's punts).

mod common;
use affinity_api::{AffinityKey, NatAction};
use affinity_forwarding_agent::actions::{ActionSet, InterestKey, NatActionKey, SeqAdjustKey};
use affinity_forwarding_agent::wire::{self, build, checksum};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf, Worker};
use common::{fix_ip, from, run_batch, state, wildcard_msg, Wc, MGR, SEC};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::sync::Arc;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const HEADROOM: usize = 128;
/// Fixed affinities installed, one per action set below, for each of TCP
/// and UDP.
const FLOWS: usize = 10;

/// The action set of flow `i`: plain ones first, then the ones the fast
/// path must decline.
fn actions(i: usize) -> ActionSet {
    let nat = |flags: u8| {
        Some(NatActionKey::from(NatAction {
            flags,
            src_addr: Ipv4Addr::new(198, 51, 100, 1),
            dst_addr: Ipv4Addr::new(198, 51, 100, 2),
            src_port: 40000,
            dst_port: 8080,
        }))
    };
    let fwd = |a: ActionSet, to: u32| ActionSet {
        dispatch_flags: affinity_api::dispatch::FORWARD,
        forward_addr: to,
        ..a
    };
    let base = ActionSet::default();
    match i {
        0 => ActionSet {
            nat: nat(NatAction::DST_ADDR | NatAction::DST_PORT),
            ..base
        },
        1 => ActionSet {
            nat: nat(NatAction::SRC_ADDR | NatAction::SRC_PORT),
            ..base
        },
        2 => fwd(
            ActionSet {
                nat: nat(0x0f),
                ..base
            },
            0xc633_6409,
        ),
        3 => fwd(base, 0xc633_6409),
        4 => fwd(base, 0),
        5 => ActionSet {
            nat: nat(0),
            ..base
        },
        6 => fwd(
            ActionSet {
                info_flags: affinity_api::info::STATISTICS,
                ..base
            },
            0xc633_6409,
        ),
        7 => ActionSet {
            nat: nat(NatAction::DST_ADDR),
            seq_adjust: Some(SeqAdjustKey(1000, 0, 0xffff_0000, 0)),
            ..base
        },
        8 => ActionSet {
            interest: Some(InterestKey {
                address: u32::from(MGR),
                port: affinity_api::MANAGER_PORT,
                mask: affinity_api::interest::ALL,
                flags: 0,
            }),
            ..base
        },
        // Installed with a TTL that is over by the time packets come.
        _ => ActionSet {
            nat: nat(NatAction::DST_ADDR),
            ..base
        },
    }
}

fn key(protocol: u8, i: usize) -> AffinityKey {
    AffinityKey {
        protocol,
        src_addr: CLIENT,
        dst_addr: SERVER,
        src_port: 1000 + i as u16,
        dst_port: 80,
    }
}

fn agent() -> Arc<Agent> {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 256,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        agent_name: "fa1".into(),
        ..AgentConfig::default()
    });
    // A wildcard for the server's TCP port 80 (punts to the manager).
    let mut wc = Wc::to_vip(10);
    wc.key.dst_addr = SERVER;
    let out = a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[wc], None));
    assert!(out.replies.is_empty());
    for protocol in [wire::TCP, wire::UDP] {
        for i in 0..FLOWS {
            let ttl = if i == FLOWS - 1 { 1 } else { 3600 };
            a.install_fixed_local(0, key(protocol, i), &actions(i), ttl)
                .unwrap();
        }
    }
    a
}

/// One generated packet: which flow (or an unknown port), its shape, and
/// the buffer's partial-checksum mark.
#[derive(Debug, Clone)]
struct Gen {
    proto: u8,
    flow: usize,
    unknown: bool,
    flags: u8,
    payload: usize,
    shape: u8,
    padding: usize,
    partial: bool,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        prop_oneof![4 => Just(wire::TCP), 3 => Just(wire::UDP), 1 => Just(wire::ICMP)],
        0..FLOWS,
        prop::bool::weighted(0.15),
        prop_oneof![
            Just(build::TCP_ACK),
            Just(build::TCP_SYN),
            Just(build::TCP_SYN | build::TCP_ACK),
            Just(build::TCP_RST),
            Just(build::TCP_FIN | build::TCP_ACK),
            Just(build::TCP_PSH | build::TCP_ACK),
            any::<u8>()
        ],
        0usize..40,
        prop_oneof![8 => Just(0u8), 1 => 1u8..8],
        prop_oneof![3 => Just(0usize), 1 => 1usize..6],
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(proto, flow, unknown, flags, payload, shape, padding, partial)| Gen {
                proto,
                flow,
                unknown,
                flags,
                payload,
                shape,
                padding,
                partial,
            },
        )
}

/// The packet `g` describes.
fn packet(g: &Gen) -> Vec<u8> {
    let port = if g.unknown {
        5000
    } else {
        1000 + g.flow as u16
    };
    let payload = vec![0x5a; g.payload];
    let mut p = match g.proto {
        wire::TCP => build::tcp(CLIENT, port, SERVER, 80, g.flags, 7, 9, &payload),
        wire::UDP => build::udp(CLIENT, port, SERVER, 80, &payload),
        _ => build::icmp_echo(CLIENT, SERVER, port, 1, true, &payload),
    };
    match g.shape {
        // IP options (4 NOPs): IHL 6.
        1 => {
            p.splice(20..20, [1u8, 1, 1, 1]);
            p[0] = 0x46;
            let len = p.len() as u16;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            fix_ip(&mut p);
        }
        // A first fragment, and a later one.
        2 => {
            p[6] |= 0x20;
            fix_ip(&mut p);
        }
        3 => {
            p[7] |= 0x03;
            fix_ip(&mut p);
        }
        // A total length past the packet's end, and one cut into the
        // transport header.
        4 => {
            let len = p.len() as u16 + 4;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            fix_ip(&mut p);
        }
        5 => {
            p[2..4].copy_from_slice(&24u16.to_be_bytes());
            fix_ip(&mut p);
        }
        // A UDP checksum of 0 (none); for TCP, a data offset past the end.
        6 => {
            if g.proto == wire::UDP {
                p[26] = 0;
                p[27] = 0;
            } else if g.proto == wire::TCP {
                p[32] = 0xf0;
            }
        }
        // Not IPv4 at all.
        7 => p[0] = 0x65,
        _ => {}
    }
    p.resize(p.len() + g.padding, 0xee);
    p
}

/// Runs `gens` as one batch through `w` at `now_ns`: the dispositions and
/// the buffers afterwards.
fn run(w: &mut Worker, now_ns: u64, gens: &[Gen]) -> (Vec<Disposition>, Vec<Vec<u8>>) {
    run_batch(
        w,
        now_ns,
        HEADROOM,
        gens.iter().map(|g| (packet(g), g.partial)),
    )
}

fn edge32() -> impl Strategy<Value = u32> {
    prop_oneof![4 => any::<u32>(), 1 => Just(0), 1 => Just(u32::MAX), 1 => Just(0xffff_0000), 1 => Just(0x0000_ffff)]
}

fn edge16() -> impl Strategy<Value = u16> {
    prop_oneof![4 => any::<u16>(), 1 => Just(0), 1 => Just(u16::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn fast_and_general_paths_agree(
        batches in prop::collection::vec(prop::collection::vec(gen(), 1..40), 1..4),
    ) {
        let (fa, ga) = (agent(), agent());
        let (mut fw, mut gw) = (fa.worker(), ga.worker());
        gw.set_fast_path(false);
        for (n, batch) in batches.iter().enumerate() {
            // 2 s on: the last flow's 1 s TTL is over.
            let now = 2 * SEC + n as u64 * 1000;
            let f = run(&mut fw, now, batch);
            let g = run(&mut gw, now, batch);
            prop_assert_eq!(&f.0, &g.0);
            prop_assert_eq!(&f.1, &g.1);
            prop_assert_eq!(state(&fa, &mut fw, now), state(&ga, &mut gw, now));
        }
    }

    /// Plain packets only (the fast path's own case), with random NAT
    /// rewrites: the checksums of what it rewrote verify.
    #[test]
    fn plain_nat_keeps_checksums(
        proto in prop_oneof![Just(wire::TCP), Just(wire::UDP)],
        flags in 0u8..16, payload in 0usize..64,
        // The all-zero and all-ones words are where a one's-complement
        // shortcut would pick the other zero.
        (sa, da, osa, oda) in (edge32(), edge32(), edge32(), edge32()),
        (sp, dp, osp, odp) in (edge16(), edge16(), edge16(), edge16()),
    ) {
        let data = vec![0xa5; payload];
        let (mut p, _) = plain_packet(proto, osa, osp, oda, odp, &data);
        let plain = wire::parse_plain(&p).unwrap();
        let full = wire::parse_ipv4(&p).unwrap();
        prop_assert_eq!(plain.key(), full.key);
        let nat = NatActionKey { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        let mut q = p.clone();
        let mut info = full;
        wire::apply_nat_in_place(&mut q, &mut info, &nat.into(), false).unwrap();
        wire::apply_nat_plain(&mut p, &plain, &wire::PlainNat::from(&nat));
        prop_assert_eq!(&p, &q);
        prop_assert!(checksum::verify_ipv4(&p));
        prop_assert!(checksum::verify_l4(&p, &info));
    }

    /// Whatever the bytes, `parse_plain` accepts only what `parse_ipv4`
    /// parses as an unfragmented TCP or UDP packet with a 20-byte header,
    /// and reads the same key, length and flags.
    #[test]
    fn parse_plain_agrees_with_parse_ipv4(
        base in prop_oneof![Just(wire::TCP), Just(wire::UDP), Just(wire::ICMP)],
        edits in prop::collection::vec((0usize..48, any::<u8>()), 0..4),
        cut in 0usize..8,
    ) {
        let mut p = match base {
            wire::TCP => build::tcp(CLIENT, 1, SERVER, 2, build::TCP_ACK, 3, 4, &[9; 5]),
            wire::UDP => build::udp(CLIENT, 1, SERVER, 2, &[9; 5]),
            _ => build::icmp_echo(CLIENT, SERVER, 1, 2, true, &[9; 5]),
        };
        for (at, v) in edits {
            if at < p.len() {
                p[at] = v;
            }
        }
        p.truncate(p.len().saturating_sub(cut));
        if let Some(plain) = wire::parse_plain(&p) {
            let full = wire::parse_ipv4(&p);
            prop_assert!(full.is_ok(), "{:?}", full);
            let full = full.unwrap();
            prop_assert_eq!(full.fragment, wire::Fragment::None);
            prop_assert_eq!(full.l4_offset, 20);
            prop_assert_eq!(plain.key(), full.key);
            prop_assert_eq!(usize::from(plain.total_len), full.total_len);
            prop_assert_eq!(plain.tcp_flags, full.tcp_flags);
        } else if let Ok(full) = wire::parse_ipv4(&p) {
            // Declined only for what is not plain.
            prop_assert!(
                full.header_len != 20
                    || full.fragment != wire::Fragment::None
                    || !matches!(full.key.protocol, wire::TCP | wire::UDP),
                "{:?}", full
            );
        }
    }
}

/// Runs `gens` as one batch through `w` at `now_ns`, starting every
/// disposition as something the batch must overwrite: the dispositions
/// and each packet's length afterwards, with its length before.
fn run_lens(w: &mut Worker, now_ns: u64, gens: &[Gen]) -> (Vec<Disposition>, Vec<(usize, usize)>) {
    let mut bufs: Vec<Vec<u8>> = gens
        .iter()
        .map(|g| {
            let mut b = vec![0u8; HEADROOM];
            b.extend(packet(g));
            b
        })
        .collect();
    let before: Vec<usize> = bufs.iter().map(|b| b.len() - HEADROOM).collect();
    let mut out = vec![Disposition::Drop(Counter::DropInternalError); gens.len()];
    let mut pkts: Vec<PacketBuf<'_>> = bufs
        .iter_mut()
        .zip(gens)
        .map(|(b, g)| {
            let len = b.len() - HEADROOM;
            let p = PacketBuf::new(b, HEADROOM, len);
            if g.partial {
                p.with_partial_l4_checksum()
            } else {
                p
            }
        })
        .collect();
    w.process_batch(now_ns, &mut pkts, &mut out);
    let lens = pkts.iter().zip(before).map(|(p, l)| (l, p.len)).collect();
    (out, lens)
}

/// The packets of a batch that are passes at their own length: those the
/// VPP node need not look at.
fn unchanged_passes(out: &[Disposition], lens: &[(usize, usize)]) -> usize {
    out.iter()
        .zip(lens)
        .filter(|(d, (before, after))| **d == Disposition::Pass && before == after)
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// `Worker::plain_passes` never counts a packet whose disposition the
    /// VPP node must read (it skips its result loop when the count is the
    /// whole frame): at most the batch's passes at their own length, and
    /// none with the common case's path off or while tracing. Batches past
    /// `BATCH` (256) span two chunks.
    #[test]
    fn plain_passes_never_hide_an_exception(
        batch in prop::collection::vec(gen(), 1..300),
        fast in any::<bool>(),
        tracing in prop::bool::weighted(0.2),
    ) {
        let a = agent();
        let mut w = a.worker();
        w.set_fast_path(fast);
        w.set_tracing(tracing);
        let (out, lens) = run_lens(&mut w, 2 * SEC, &batch);
        prop_assert!(w.plain_passes() <= unchanged_passes(&out, &lens));
        if !fast || tracing {
            prop_assert_eq!(w.plain_passes(), 0);
        }
    }
}

/// A batch of nothing but plain packets of NAT-only flows (flows 0, 1 and
/// 5: the bench's case) is all plain passes, and the counters the common
/// case's path tallies per chunk (`Packets`, `FixedHit`, `NatApplied`)
/// grow by one a packet, across a chunk boundary too (300 packets); one
/// packet the general path passes (an unknown port) is not counted as one,
/// so the VPP node then reads every disposition.
#[test]
fn an_all_plain_batch_is_reported_as_such() {
    let a = agent();
    let mut w = a.worker();
    let gen = |i: usize, unknown: bool| Gen {
        proto: if i.is_multiple_of(2) {
            wire::TCP
        } else {
            wire::UDP
        },
        flow: [0, 1, 5][i % 3],
        unknown,
        flags: build::TCP_ACK,
        payload: i % 30,
        shape: 0,
        padding: 0,
        partial: false,
    };
    let count = |w: &Worker, c: Counter| w.counters().0[c as usize];
    let batch: Vec<Gen> = (0..300).map(|i| gen(i, false)).collect();
    let before = [Counter::Packets, Counter::FixedHit, Counter::NatApplied].map(|c| count(&w, c));
    let (out, lens) = run_lens(&mut w, 2 * SEC, &batch);
    assert_eq!(unchanged_passes(&out, &lens), 300);
    assert_eq!(w.plain_passes(), 300);
    let after = [Counter::Packets, Counter::FixedHit, Counter::NatApplied].map(|c| count(&w, c));
    // Flow 5's NAT changes nothing but is still applied, as in the
    // general path.
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [300, 300, 300]
    );
    let mut mixed = batch[..20].to_vec();
    mixed[7] = gen(7, true);
    let (out, lens) = run_lens(&mut w, 2 * SEC, &mixed);
    assert_eq!(unchanged_passes(&out, &lens), 20);
    assert_eq!(w.plain_passes(), 19);
}

/// A plain TCP ACK (sequence 1, acknowledgment 2) or UDP datagram of IP
/// `proto` from `c`:`sp` to `s`:`dp` carrying `data`, and the offset of its
/// transport checksum (36 for TCP, 26 for UDP: no options).
fn plain_packet(proto: u8, c: u32, sp: u16, s: u32, dp: u16, data: &[u8]) -> (Vec<u8>, usize) {
    let (c, s) = (Ipv4Addr::from(c), Ipv4Addr::from(s));
    if proto == wire::TCP {
        (build::tcp(c, sp, s, dp, build::TCP_ACK, 1, 2, data), 36)
    } else {
        (build::udp(c, sp, s, dp, data), 26)
    }
}

/// The one's-complement sum (folded, not complemented) of packet `p`'s
/// IPv4 header (checksum field included) and of its TCP or UDP segment
/// with the pseudo-header (RFC 793 section 3.1, RFC 768): what a receiver
/// sums to check them. Both are nonzero integer sums, so the fold is a
/// value in 1..=0xffff fixed by the sum modulo 0xffff.
fn received_sums(p: &[u8]) -> (u16, u16) {
    let ip = checksum::fold(checksum::sum16(&p[..20]));
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let seg = &p[20..total];
    let l4 =
        checksum::sum16(&p[12..20]) + u32::from(p[9]) + seg.len() as u32 + checksum::sum16(seg);
    (ip, checksum::fold(l4))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]
    /// Received checksums need not verify, and the common case's NAT does
    /// not check them: whatever the IPv4 and transport checksum fields
    /// hold (0, 0xffff, any value), for every NAT flag set and edge
    /// address and port, it writes the same bytes as the general path
    /// (`apply_nat_in_place`), and each checksum's error is carried over
    /// unchanged (RFC 1624 eqn. 3: the receiver's sums, modulo 0xffff, are
    /// the same before and after), except that a UDP checksum of 0 (none,
    /// RFC 768) stays 0. The second oracle does not rest on the general
    /// path: it catches an error both paths would share. (A fold one carry
    /// short is too rare for this sample: see
    /// `plain_nat_agrees_for_every_checksum_value`.)
    #[test]
    fn plain_nat_carries_any_checksum_over(
        proto in prop_oneof![Just(wire::TCP), Just(wire::UDP)],
        flags in 0u8..16, payload in 0usize..16,
        (sa, da, osa, oda) in (edge32(), edge32(), edge32(), edge32()),
        (sp, dp, osp, odp) in (edge16(), edge16(), edge16(), edge16()),
        (ip_csum, l4_csum) in (edge16(), edge16()),
    ) {
        let data = vec![0x5a; payload];
        let (mut p, at) = plain_packet(proto, osa, osp, oda, odp, &data);
        p[10..12].copy_from_slice(&ip_csum.to_be_bytes());
        p[at..at + 2].copy_from_slice(&l4_csum.to_be_bytes());
        let before = received_sums(&p);
        let plain = wire::parse_plain(&p).unwrap();
        let mut info = wire::parse_ipv4(&p).unwrap();
        let nat = NatActionKey { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        let mut q = p.clone();
        wire::apply_nat_in_place(&mut q, &mut info, &nat.into(), false).unwrap();
        wire::apply_nat_plain(&mut p, &plain, &wire::PlainNat::from(&nat));
        prop_assert_eq!(&p, &q);
        let after = received_sums(&p);
        prop_assert_eq!(after.0, before.0, "IPv4 header sum");
        if proto == wire::UDP && l4_csum == 0 {
            prop_assert_eq!(&p[at..at + 2], &[0u8, 0][..]);
        } else {
            prop_assert_eq!(after.1, before.1, "transport sum");
            // A checksum that comes to 0 goes out as all ones for UDP.
            prop_assert!(proto == wire::TCP || p[at..at + 2] != [0, 0]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    /// The lengths too: `fast_and_general_paths_agree` compares buffers,
    /// not the length each packet leaves at (`PacketBuf::len`, which the
    /// VPP node reads for a pass and which its result-loop skip assumes
    /// unchanged). Over batches of up to 300 packets (two chunks), with
    /// padding, any TCP flags, fragments and every declined kind mixed
    /// in, both paths give each packet the same disposition and length
    /// (fails if the common case trims a padded packet it forwards, which
    /// no other test here sees), and a batch the common case passed whole
    /// (`plain_passes` = its size) has every packet at its arrival length.
    #[test]
    fn fast_and_general_paths_agree_on_lengths(
        batch in prop::collection::vec(gen(), 1..300),
        plain_share in 0u8..4,
    ) {
        // Some batches mostly of the fast path's own flows (0, 1, 5), so
        // that all-plain batches and long plain runs come up.
        let batch: Vec<Gen> = batch
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                if (i as u8 % 4) < plain_share {
                    Gen { flow: [0, 1, 5][i % 3], unknown: false, shape: 0, partial: false, proto: if i % 2 == 0 { wire::TCP } else { wire::UDP }, ..g }
                } else {
                    g
                }
            })
            .collect();
        let (fa, ga) = (agent(), agent());
        let (mut fw, mut gw) = (fa.worker(), ga.worker());
        gw.set_fast_path(false);
        let f = run_lens(&mut fw, 2 * SEC, &batch);
        let g = run_lens(&mut gw, 2 * SEC, &batch);
        prop_assert_eq!(&f.0, &g.0);
        prop_assert_eq!(&f.1, &g.1);
        prop_assert!(fw.plain_passes() <= unchanged_passes(&f.0, &f.1));
        prop_assert_eq!(gw.plain_passes(), 0);
        if fw.plain_passes() == batch.len() {
            prop_assert!(f.1.iter().all(|(b, a)| b == a));
        }
        prop_assert_eq!(state(&fa, &mut fw, 2 * SEC), state(&ga, &mut gw, 2 * SEC));
    }
}

/// Every value of the checksum fields, not a random few: for TCP and UDP,
/// every NAT flag set, addresses at the words' extremes (0.0.0.0 and
/// 255.255.255.255 before, the other after, so the sums are at their
/// largest and smallest), each of the 65536 values in the IPv4 and the
/// transport checksum field gives the same bytes in the common case's NAT
/// as in the general path's. The checksum field shifts the sum through
/// every residue, so a fold that misses a carry on some residue (one
/// end-around carry too few: 4 in 65536 of the sums) is found, which a
/// random sample almost never does.
#[test]
fn plain_nat_agrees_for_every_checksum_value() {
    let ends = [(0u32, u32::MAX, 0u16, u16::MAX), (u32::MAX, 0, u16::MAX, 0)];
    for proto in [wire::TCP, wire::UDP] {
        for (old_a, new_a, old_p, new_p) in ends {
            let (c, s) = (Ipv4Addr::from(old_a), Ipv4Addr::from(old_a));
            let (base, at) = if proto == wire::TCP {
                (
                    build::tcp(c, old_p, s, old_p, build::TCP_ACK, 1, 2, &[]),
                    36,
                )
            } else {
                (build::udp(c, old_p, s, old_p, &[]), 26)
            };
            let plain = wire::parse_plain(&base).unwrap();
            let info = wire::parse_ipv4(&base).unwrap();
            for flags in 0u8..16 {
                let nat = NatActionKey {
                    flags,
                    src_addr: new_a,
                    dst_addr: new_a,
                    src_port: new_p,
                    dst_port: new_p,
                };
                let (general, fast) = (nat.into(), wire::PlainNat::from(&nat));
                for v in 0..=u16::MAX {
                    let mut p = base.clone();
                    p[10..12].copy_from_slice(&v.to_be_bytes());
                    p[at..at + 2].copy_from_slice(&v.to_be_bytes());
                    let mut q = p.clone();
                    let mut i = info;
                    wire::apply_nat_in_place(&mut q, &mut i, &general, false).unwrap();
                    wire::apply_nat_plain(&mut p, &plain, &fast);
                    assert_eq!(p, q, "proto {proto} flags {flags:#x} field {v:#06x}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// `PlainNat`'s fields are public, and `checksum::fold_wide` is exact
    /// for every u64: a hand-built `PlainNat` whose `addr_sum` and
    /// `port_sum` are the true word sums raised by multiples of 0xffff (the
    /// same modulo 0xffff, up to within 0xffff of u32::MAX) writes the
    /// same bytes as the one `PlainNat::new` builds and as the general
    /// path, and both checksums equal a full recompute, bit for bit (the
    /// incoming ones verify, so no sum is 0). Fails if the common case
    /// takes the sums only over the range `PlainNat::new` gives them (say
    /// `port_sum & 0x3_ffff`), which the tests above do not see, or
    /// narrows its sum to 32 bits before the fold. (A fold one carry
    /// short: `plain_nat_agrees_for_every_checksum_value`.)
    #[test]
    fn plain_nat_with_sums_raised_by_multiples_of_0xffff(
        proto in prop_oneof![Just(wire::TCP), Just(wire::UDP)],
        flags in 0u8..16, payload in 0usize..16,
        (sa, da, osa, oda) in (edge32(), edge32(), edge32(), edge32()),
        (sp, dp, osp, odp) in (edge16(), edge16(), edge16(), edge16()),
        (ka, kp) in (any::<u32>(), any::<u32>()),
    ) {
        let data = vec![0x3c; payload];
        let (mut p, at) = plain_packet(proto, osa, osp, oda, odp, &data);
        let plain = wire::parse_plain(&p).unwrap();
        let mut info = wire::parse_ipv4(&p).unwrap();
        let nat = NatActionKey { flags, src_addr: sa, dst_addr: da, src_port: sp, dst_port: dp };
        let fair = wire::PlainNat::from(&nat);
        // The largest multiple of 0xffff that fits half the time, any
        // other that fits the rest.
        let raise = |sum: u32, k: u32| {
            let most = (u32::MAX - sum) / 0xffff;
            sum + 0xffff * if k & 1 == 0 { most } else { (k >> 1) % (most + 1) }
        };
        let hand = wire::PlainNat {
            addr_sum: raise(fair.addr_sum, ka),
            port_sum: raise(fair.port_sum, kp),
            ..fair
        };
        let mut q = p.clone();
        let mut r = p.clone();
        wire::apply_nat_in_place(&mut q, &mut info, &nat.into(), false).unwrap();
        wire::apply_nat_plain(&mut r, &plain, &fair);
        wire::apply_nat_plain(&mut p, &plain, &hand);
        prop_assert_eq!(&p, &q);
        prop_assert_eq!(&p, &r);
        prop_assert_eq!(&p[10..12], &checksum::ipv4_header_checksum(&p[..20]).to_be_bytes()[..]);
        prop_assert_eq!(&p[at..at + 2], &checksum::l4_checksum(&p, &info).unwrap().to_be_bytes()[..]);
    }
}
