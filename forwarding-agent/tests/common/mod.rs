//! A scripted manager for data-path tests: builds the service messages a
//! real manager sends.
#![allow(dead_code)]

use affinity_api::{
    encode_action_list, interest, ActionList, AdmissionAction, AdvertiseAction, AffinityIdentifier,
    AffinityKey, BackupPrecedence, FixedAffinity, IdentityInfo, InterestCriteria, Key,
    MessageBuilder, MessageType, NatAction, Segment, ServicePrecedence, WildcardAffinity,
    MANAGER_PORT,
};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{Agent, Disposition, PacketBuf, Worker};
use std::net::{Ipv4Addr, SocketAddrV4};

pub const MGR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const MGR2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const SEC: u64 = 1_000_000_000;

pub fn from(a: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(a, MANAGER_PORT)
}

#[derive(Clone)]
pub struct Wc {
    pub id: u32,
    pub key: AffinityKey,
    pub src_mask: Ipv4Addr,
    pub dst_mask: Ipv4Addr,
    pub ttl: u32,
    pub service: u16,
    pub backup: u16,
    pub interest: Option<InterestCriteria>,
    pub nat: Option<NatAction>,
    pub advertise: Option<AdvertiseAction>,
    pub actions_required: Vec<u16>,
    pub dispatch: u8,
    pub info: u8,
    pub forward: Ipv4Addr,
    /// Admission control for this wildcard's punts (token budgets, SYN proxy);
    /// `None` leaves the agent's defaults.
    pub admission: Option<AdmissionAction>,
}

impl Wc {
    /// clients → VIP:80/tcp, punting all packets with data to `mgr`.
    pub fn to_vip(id: u32) -> Wc {
        Wc {
            id,
            key: AffinityKey {
                protocol: wire::TCP,
                src_addr: Ipv4Addr::UNSPECIFIED,
                dst_addr: VIP,
                src_port: 0,
                dst_port: 80,
            },
            src_mask: Ipv4Addr::UNSPECIFIED,
            dst_mask: Ipv4Addr::BROADCAST,
            ttl: 30,
            service: 100,
            backup: 0,
            interest: Some(InterestCriteria {
                address: Ipv4Addr::UNSPECIFIED,
                port: 0,
                mask: interest::ALL,
                flags: InterestCriteria::DATA,
            }),
            nat: None,
            advertise: None,
            actions_required: vec![],
            dispatch: 0,
            info: 0,
            forward: Ipv4Addr::UNSPECIFIED,
            admission: None,
        }
    }
    /// backends → clients (reverse direction).
    pub fn from_backends(id: u32) -> Wc {
        Wc {
            key: AffinityKey {
                protocol: wire::TCP,
                src_addr: BACKEND,
                dst_addr: Ipv4Addr::UNSPECIFIED,
                src_port: 8080,
                dst_port: 0,
            },
            src_mask: Ipv4Addr::new(255, 255, 255, 0),
            dst_mask: Ipv4Addr::UNSPECIFIED,
            ..Wc::to_vip(id)
        }
    }
}

impl Wc {
    /// [`Wc::to_vip`] whose SYNs only are interesting, with `flags`
    /// (`InterestCriteria::HOLD`: held until the manager answers).
    pub fn syn_interest(id: u32, flags: u8) -> Wc {
        Wc {
            interest: Some(InterestCriteria {
                address: Ipv4Addr::UNSPECIFIED,
                port: 0,
                mask: interest::SYN,
                flags,
            }),
            ..Wc::to_vip(id)
        }
    }

    /// [`Wc::to_vip`] that also advertises VIP/32: packets to the VIP
    /// that match no wildcard are dropped (`Counter::DropAdvertised`).
    pub fn advertising_vip(id: u32) -> Wc {
        Wc {
            advertise: Some(AdvertiseAction {
                address: VIP,
                mask: None,
            }),
            ..Wc::to_vip(id)
        }
    }
}

/// From MGR, sequence 1: SYNs to VIP:80 interesting with `flags` (wildcard
/// 10, [`Wc::syn_interest`]) and the backends' replies (wildcard 11).
pub fn syn_interest_msg(flags: u8) -> Vec<u8> {
    let w = [Wc::syn_interest(10, flags), Wc::from_backends(11)];
    wildcard_msg(MGR, 1, &w, None)
}

/// A service chain on `a` at time 0: MGR's wildcard 10 to VIP:80 at
/// service precedence 200, then MGR2's wildcard 11 to the same at 100 (the
/// next service a returned packet goes to).
pub fn install_chain(a: &Agent) {
    let mut high = Wc::to_vip(10);
    high.service = 200;
    let mut low = Wc::to_vip(11);
    low.service = 100;
    a.handle_control(0, from(MGR), &wildcard_msg(MGR, 1, &[high], None));
    a.handle_control(0, from(MGR2), &wildcard_msg(MGR2, 1, &[low], None));
}

pub fn wildcard_msg(mgr: Ipv4Addr, seq: u64, wcs: &[Wc], key: Option<&Key>) -> Vec<u8> {
    let mut b = match key {
        Some(k) => MessageBuilder::signed(MessageType::AffinityUpdateWildcard, seq, k),
        None => MessageBuilder::new(MessageType::AffinityUpdateWildcard, seq),
    };
    b.push(Segment::IdentityInfo(IdentityInfo {
        address: mgr,
        host_name: "mgr",
    }));
    let lists: Vec<Vec<u8>> = wcs
        .iter()
        .map(|w| {
            encode_action_list(
                &w.actions_required
                    .iter()
                    .map(|&t| (t, true))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    for (w, list) in wcs.iter().zip(&lists) {
        b.push(Segment::WildcardAffinity(WildcardAffinity {
            key: w.key,
            src_mask: w.src_mask,
            dst_mask: w.dst_mask,
            dispatch_flags: w.dispatch,
            info_flags: w.info,
            forward_addr: w.forward,
            ttl: w.ttl,
        }));
        b.push(Segment::AffinityIdentifier(AffinityIdentifier {
            id: w.id,
            reason: 0,
        }));
        b.push(Segment::ServicePrecedence(ServicePrecedence {
            search_first: false,
            value: w.service,
        }));
        b.push(Segment::BackupPrecedence(BackupPrecedence {
            value: w.backup,
        }));
        if let Some(c) = w.interest {
            b.push(Segment::InterestCriteria(c));
        }
        if let Some(n) = w.nat {
            b.push(Segment::NatAction(n));
        }
        if let Some(a) = w.advertise {
            b.push(Segment::AdvertiseAction(a));
        }
        if !w.actions_required.is_empty() {
            b.push(Segment::ActionList(ActionList::from_raw(list).unwrap()));
        }
        if let Some(a) = w.admission {
            b.push(Segment::AdmissionAction(a));
        }
    }
    b.finish().unwrap()
}

/// An update-fixed from `mgr` (sequence `seq`): its identity, the echoed
/// agent data `echo`, then per entry of `affinities` a fixed affinity (key,
/// TTL in seconds) followed by that affinity's segments, then the returned
/// packet `packet`.
pub fn fixed_msg(
    mgr: Ipv4Addr,
    seq: u64,
    affinities: &[(AffinityKey, u32, &[Segment<'_>])],
    echo: Option<&[u8]>,
    packet: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateFixed, seq);
    b.push(Segment::IdentityInfo(IdentityInfo {
        address: mgr,
        host_name: "mgr",
    }));
    if let Some(e) = echo {
        b.push(Segment::FaInterestData(e));
    }
    for &(key, ttl, per_affinity) in affinities {
        b.push(Segment::FixedAffinity(FixedAffinity {
            key,
            ttl,
            ..Default::default()
        }));
        for s in per_affinity {
            b.push(*s);
        }
    }
    if let Some(p) = packet {
        b.push(Segment::IpPacket(p));
    }
    b.finish().unwrap()
}

/// The two fixed affinities of a NAT'ed flow client:cport → VIP:80 ⇒ BACKEND:8080.
pub fn flow_msg(
    mgr: Ipv4Addr,
    seq: u64,
    cport: u16,
    ttl: u32,
    echo: Option<&[u8]>,
    packet: Option<&[u8]>,
) -> Vec<u8> {
    let fwd = AffinityKey {
        protocol: wire::TCP,
        src_addr: CLIENT,
        dst_addr: VIP,
        src_port: cport,
        dst_port: 80,
    };
    let rev = AffinityKey {
        protocol: wire::TCP,
        src_addr: BACKEND,
        dst_addr: CLIENT,
        src_port: 8080,
        dst_port: cport,
    };
    let fin_rst = Segment::InterestCriteria(InterestCriteria {
        address: Ipv4Addr::UNSPECIFIED,
        port: 0,
        mask: interest::FIN | interest::RST,
        flags: InterestCriteria::COPY,
    });
    let id = |id| Segment::AffinityIdentifier(AffinityIdentifier { id, reason: 0 });
    let to_backend = Segment::NatAction(NatAction {
        flags: NatAction::DST_ADDR | NatAction::DST_PORT,
        dst_addr: BACKEND,
        dst_port: 8080,
        ..Default::default()
    });
    let from_vip = Segment::NatAction(NatAction {
        flags: NatAction::SRC_ADDR | NatAction::SRC_PORT,
        src_addr: VIP,
        src_port: 80,
        ..Default::default()
    });
    let affinities: [(AffinityKey, u32, &[Segment<'_>]); 2] = [
        (fwd, ttl, &[id(1), to_backend, fin_rst]),
        (rev, ttl, &[id(2), from_vip, fin_rst]),
    ];
    fixed_msg(mgr, seq, &affinities, echo, packet)
}

/// An update-wildcard (sequence `seq`, signed with `key` when given): one
/// wildcard (TTL 5 s) and a Required segment of unknown type 99, which an
/// agent must deny ([`DenyReason::UNKNOWN_REQUIRED_SEGMENT`]).
pub fn unknown_required_msg(seq: u64, key: Option<&Key>) -> Vec<u8> {
    let mut b = match key {
        Some(k) => MessageBuilder::signed(MessageType::AffinityUpdateWildcard, seq, k),
        None => MessageBuilder::new(MessageType::AffinityUpdateWildcard, seq),
    };
    b.push(Segment::WildcardAffinity(WildcardAffinity {
        ttl: 5,
        ..Default::default()
    }));
    b.push_with(
        Segment::Unknown {
            seg_type: 99,
            body: &[1, 2],
        },
        true,
    );
    b.finish().unwrap()
}

pub fn syn(cport: u16) -> Vec<u8> {
    build::tcp(CLIENT, cport, VIP, 80, build::TCP_SYN, 1000, 0, &[])
}

pub fn data(cport: u16, flags: u8) -> Vec<u8> {
    build::tcp(
        CLIENT,
        cport,
        VIP,
        80,
        flags,
        1001,
        5000,
        b"GET / HTTP/1.0\r\n\r\n",
    )
}

pub fn reply(cport: u16, flags: u8) -> Vec<u8> {
    build::tcp(
        BACKEND,
        8080,
        CLIENT,
        cport,
        flags,
        5000,
        1019,
        b"HTTP/1.0 200 OK\r\n\r\n",
    )
}

/// A packet in a buffer with `headroom` bytes before it.
pub fn buffer(pkt: &[u8], headroom: usize) -> Vec<u8> {
    let mut b = vec![0xa5u8; headroom];
    b.extend_from_slice(pkt);
    b
}

/// `pkt` alone through worker `w` at `now` (ns), after `headroom` bytes of
/// headroom (see [`buffer`]): its disposition and the whole buffer after.
pub fn run_one(w: &mut Worker, now: u64, pkt: &[u8], headroom: usize) -> (Disposition, Vec<u8>) {
    let mut buf = buffer(pkt, headroom);
    let mut pkts = [PacketBuf::new(&mut buf, headroom, pkt.len())];
    let mut out = [Disposition::Pass];
    w.process_batch(now, &mut pkts, &mut out);
    (out[0], buf)
}

/// Sets IPv4 packet `p`'s header checksum again after a test edited the
/// header (its length from the IHL, clamped to the packet).
pub fn fix_ip(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = wire::checksum::ipv4_header_checksum(&p[..ihl.min(p.len())]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

pub fn checksums_ok(pkt: &[u8]) -> bool {
    let info = wire::parse_ipv4(pkt).unwrap();
    wire::checksum::verify_ipv4(pkt) && wire::checksum::verify_l4(pkt, &info)
}

/// `packets` laid out in `bufs` as one batch: packet `i` at
/// `i * slot + head` (the `head` bytes before it are headroom the agent may
/// grow the packet into); the batch's buffers, one per packet.
pub fn batch<'a>(
    bufs: &'a mut [u8],
    slot: usize,
    head: usize,
    packets: &[Vec<u8>],
) -> Vec<PacketBuf<'a>> {
    for (i, p) in packets.iter().enumerate() {
        bufs[i * slot + head..i * slot + head + p.len()].copy_from_slice(p);
    }
    bufs.chunks_mut(slot)
        .zip(packets)
        .map(|(s, p)| PacketBuf::new(s, head, p.len()))
        .collect()
}

/// xorshift64 (shifts 13, 7, 17): reproducible pseudo-random flows and
/// spoofed sources for the benches, the same sequence from the same seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next number of the sequence.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Zeroes a service message's sequence number (header bytes 8..16): the
/// agents number their messages from a clock, so two agents' punts of the
/// same packet differ there and nowhere else.
pub fn unsequence(msg: &mut [u8]) {
    if let Some(seq) = msg.get_mut(8..16) {
        seq.fill(0);
    }
}

/// Everything two agents run side by side (the fast path on and off) must
/// agree on besides a batch's output: counters, fixed entries with their
/// per-flow counts and marks, out-of-line messages (sequence numbers
/// zeroed) and released packets.
pub fn state(a: &Agent, w: &mut Worker, now_ns: u64) -> impl PartialEq + std::fmt::Debug {
    let flows: Vec<_> = a
        .fixed_entries(now_ns, 1000, |_| true)
        .into_iter()
        .map(|r| (r.key, r.packets, r.bytes, r.handshake_complete))
        .collect();
    let mut messages = w.take_messages();
    for (_, m) in messages.iter_mut() {
        unsequence(m);
    }
    (a.counters(), flows, messages, w.take_released())
}

/// Runs IPv4 `packets` (each with whether it carries a partial L4 checksum)
/// as one batch through `w` at `now_ns`, each in a buffer with `headroom`
/// bytes in front: the dispositions and the buffers afterwards, punts'
/// sequence numbers zeroed ([`unsequence`]).
pub fn run_batch(
    w: &mut Worker,
    now_ns: u64,
    headroom: usize,
    packets: impl IntoIterator<Item = (Vec<u8>, bool)>,
) -> (Vec<Disposition>, Vec<Vec<u8>>) {
    let (mut bufs, partial): (Vec<Vec<u8>>, Vec<bool>) = packets
        .into_iter()
        .map(|(p, partial)| {
            let mut b = vec![0u8; headroom];
            b.extend(p);
            (b, partial)
        })
        .unzip();
    let mut out = vec![Disposition::Pass; bufs.len()];
    {
        let mut pkts: Vec<PacketBuf<'_>> = bufs
            .iter_mut()
            .zip(&partial)
            .map(|(b, &partial)| {
                let len = b.len() - headroom;
                let p = PacketBuf::new(b, headroom, len);
                if partial {
                    p.with_partial_l4_checksum()
                } else {
                    p
                }
            })
            .collect();
        w.process_batch(now_ns, &mut pkts, &mut out);
    }
    for (d, b) in out.iter().zip(bufs.iter_mut()) {
        if let Disposition::Punt { start, .. } = d {
            unsequence(&mut b[*start..]);
        }
    }
    (out, bufs)
}
