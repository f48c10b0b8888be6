#![no_main]
//! Arbitrary packets through the data path with affinities installed from
//! the input: the first bytes choose wildcard/fixed affinities (as real
//! service messages), the rest are packets. Nothing may panic, and every
//! rewritten packet that verified before must still verify.
use affinity_api::*;
use affinity_forwarding_agent::wire::{self, checksum};
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    let (cfg, rest) = data.split_at(40);
    let agent = Agent::new(AgentConfig { fixed_capacity: 64, action_capacity: 64, wildcard_capacity: 16, ..Default::default() });
    let mut w = agent.worker();
    let mgr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), MANAGER_PORT);
    let key = AffinityKey { protocol: [0u8, 6, 17][cfg[0] as usize % 3], src_addr: addr(&cfg[1..]), dst_addr: addr(&cfg[5..]), src_port: u16::from_be_bytes([cfg[9], cfg[10]]), dst_port: u16::from_be_bytes([cfg[11], cfg[12]]) };
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateWildcard, 1);
    b.push(Segment::WildcardAffinity(WildcardAffinity { key, src_mask: addr(&cfg[13..]), dst_mask: addr(&cfg[17..]), dispatch_flags: cfg[21] & 1, info_flags: cfg[22] & 1, forward_addr: addr(&cfg[23..]), ttl: 60 }));
    b.push(Segment::InterestCriteria(InterestCriteria { address: Ipv4Addr::UNSPECIFIED, port: 0, mask: u16::from_be_bytes([cfg[27], cfg[28]]) & interest::DEFINED, flags: cfg[29] & 7 }));
    let nat = NatAction { flags: cfg[30] & 15, src_addr: addr(&cfg[31..]), dst_addr: addr(&cfg[35..]), src_port: 1000, dst_port: 2000 };
    b.push(Segment::NatAction(nat));
    if let Ok(m) = b.finish() {
        agent.handle_control(0, mgr, &m);
    }
    let mut f = MessageBuilder::new(MessageType::AffinityUpdateFixed, 2);
    f.push(Segment::FixedAffinity(FixedAffinity { key, ttl: 60, ..Default::default() }));
    f.push(Segment::NatAction(nat));
    f.push(Segment::SeqAdjustAction(SeqAdjustAction { seq_delta: cfg[39] as u32, ..Default::default() }));
    if let Ok(m) = f.finish() {
        agent.handle_control(0, mgr, &m);
    }
    for pkt in rest.split(|&b| b == 0xfe).take(8) {
        let before = wire::parse_ipv4(pkt).ok().filter(|i| checksum::verify_ipv4(pkt) && checksum::verify_l4(pkt, i));
        let mut buf = vec![0u8; 256 + pkt.len()];
        buf[256..].copy_from_slice(pkt);
        let mut out = [Disposition::Pass];
        let mut bufs = [PacketBuf::new(&mut buf, 256, pkt.len())];
        w.process_batch(1, &mut bufs, &mut out);
        // A punt ends where the packet's IP total length does (link padding
        // is cut off), as the PacketBuf's length now says.
        let end = 256 + bufs[0].len;
        if let (Disposition::Pass | Disposition::Forward(_), Some(_)) = (out[0], before) {
            let p = &buf[256..];
            let info = wire::parse_ipv4(p).expect("a rewritten packet still parses");
            assert!(checksum::verify_ipv4(p) && checksum::verify_l4(p, &info), "checksum broken by rewrite");
        }
        if let Disposition::Punt { start, .. } = out[0] {
            ServiceMessage::parse(&buf[start..end]).expect("punt is a valid message");
        }
        let _ = w.take_messages();
    }
    let _ = agent.tick(10_000_000_000);
});
