//! Overload protection through the real `Agent` in memory: punt admission
//! control (token buckets per wildcard, new flows vs known flows) and the
//! SYN proxy (cookies, the proved ACK's interest match, the splice).

mod common;
use affinity_api::{
    interest, AdmissionAction, AffinityIdentifier, AffinityKey, IdentityInfo, InterestCriteria,
    MessageBuilder, MessageType, Segment, ServicePrecedence, WildcardAffinity,
};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf, Worker};
use common::{buffer, from, CLIENT, MGR, SEC, VIP};
use std::net::Ipv4Addr;
use std::sync::Arc;

const HEADROOM: usize = 256;

fn agent() -> (Arc<Agent>, Worker) {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1 << 16,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        agent_name: "fa1".into(),
        ..AgentConfig::default()
    });
    let w = a.worker();
    (a, w)
}

/// A wildcard for clients → VIP:80/tcp punting every packet (with data)
/// to MGR, with `admission` if given.
fn vip_wildcard(admission: Option<AdmissionAction>) -> Vec<u8> {
    let mut b = MessageBuilder::new(MessageType::AffinityUpdateWildcard, 1);
    b.push(Segment::IdentityInfo(IdentityInfo {
        address: MGR,
        host_name: "mgr",
    }));
    b.push(Segment::WildcardAffinity(WildcardAffinity {
        key: AffinityKey {
            protocol: wire::TCP,
            src_addr: Ipv4Addr::UNSPECIFIED,
            dst_addr: VIP,
            src_port: 0,
            dst_port: 80,
        },
        src_mask: Ipv4Addr::UNSPECIFIED,
        dst_mask: Ipv4Addr::BROADCAST,
        dispatch_flags: 0,
        info_flags: 0,
        forward_addr: Ipv4Addr::UNSPECIFIED,
        ttl: 3600,
    }));
    b.push(Segment::AffinityIdentifier(AffinityIdentifier {
        id: 10,
        reason: 0,
    }));
    b.push(Segment::ServicePrecedence(ServicePrecedence {
        search_first: false,
        value: 100,
    }));
    b.push(Segment::InterestCriteria(InterestCriteria {
        address: Ipv4Addr::UNSPECIFIED,
        port: 0,
        mask: interest::ALL,
        flags: InterestCriteria::DATA,
    }));
    if let Some(adm) = admission {
        b.push(Segment::AdmissionAction(adm));
    }
    b.finish().unwrap()
}

fn install(a: &Agent, admission: Option<AdmissionAction>) {
    let out = a.handle_control(0, from(MGR), &vip_wildcard(admission));
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    assert_eq!(a.wildcard_entries(0).len(), 1);
}

fn run(w: &mut Worker, now: u64, pkt: &[u8]) -> (Disposition, Vec<u8>) {
    let mut buf = buffer(pkt, HEADROOM);
    let len = pkt.len();
    let mut pkts = [PacketBuf::new(&mut buf, HEADROOM, len)];
    let mut out = [Disposition::Pass];
    w.process_batch(now, &mut pkts, &mut out);
    (out[0], buf)
}

fn syn_from(port: u16) -> Vec<u8> {
    build::tcp(CLIENT, port, VIP, 80, build::TCP_SYN, 1000, 0, &[])
}

fn data_from(port: u16) -> Vec<u8> {
    let f = build::TCP_ACK | build::TCP_PSH;
    build::tcp(CLIENT, port, VIP, 80, f, 1001, 5000, b"GET /\r\n")
}

fn is_punt(d: Disposition) -> bool {
    matches!(d, Disposition::Punt { .. })
}

#[test]
fn punts_past_the_new_flow_budget_are_dropped_and_known_flows_keep_theirs() {
    let (a, mut w) = agent();
    install(
        &a,
        Some(AdmissionAction {
            flags: 0,
            new_rate: 10,
            new_burst: 5,
            known_rate: 10,
            known_burst: 4,
        }),
    );
    // A flood of new flows: the first 5 go through, the rest are dropped.
    let ds: Vec<Disposition> = (0..20)
        .map(|i| run(&mut w, SEC, &syn_from(1000 + i)).0)
        .collect();
    assert_eq!(ds.iter().filter(|d| is_punt(**d)).count(), 5);
    assert!(ds[5..]
        .iter()
        .all(|d| *d == Disposition::Drop(Counter::PuntAdmitDropNew)));
    assert_eq!(a.counter(Counter::PuntAdmitDropNew), 15);
    // Packets of flows the manager knows draw on their own budget, which
    // the flood left whole.
    let ds: Vec<Disposition> = (0..5)
        .map(|i| run(&mut w, SEC, &data_from(2000 + i)).0)
        .collect();
    assert!(ds[..4].iter().all(|d| is_punt(*d)), "{ds:?}");
    assert_eq!(ds[4], Disposition::Drop(Counter::PuntAdmitDropKnown));
    assert_eq!(a.counter(Counter::PuntAdmitDropKnown), 1);
    assert_eq!(a.counter(Counter::Punted), 9);
    // 100 ms later each bucket holds one more token (10 per second).
    let later = SEC + SEC / 10;
    assert!(is_punt(run(&mut w, later, &syn_from(3000)).0));
    assert!(!is_punt(run(&mut w, later, &syn_from(3001)).0));
    assert!(is_punt(run(&mut w, later, &data_from(3002)).0));
}

#[test]
fn without_admission_action_the_default_budget_applies() {
    let (a, mut w) = agent();
    install(&a, None);
    let burst = AdmissionAction::DEFAULT_NEW_BURST as usize;
    let mut punted = 0;
    let mut dropped = 0;
    // Bounded: the default burst plus 100 SYNs, all at the same instant.
    for i in 0..burst + 100 {
        let port = 1024 + (i % 60000) as u16;
        let src = Ipv4Addr::from(u32::from(CLIENT) + (i / 60000) as u32);
        let pkt = build::tcp(src, port, VIP, 80, build::TCP_SYN, 1, 0, &[]);
        match run(&mut w, SEC, &pkt).0 {
            Disposition::Punt { .. } => punted += 1,
            Disposition::Drop(Counter::PuntAdmitDropNew) => dropped += 1,
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(punted, burst);
    assert_eq!(dropped, 100);
}
