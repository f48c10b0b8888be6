//! Overload protection through the real `Agent` in memory: punt admission
//! control (token buckets per wildcard, new flows vs known flows) and the
//! SYN proxy (cookies, the proved ACK's interest match, the splice).

mod common;
use affinity_api::ServiceMessage;
use affinity_api::{interest, AdmissionAction, MessageType};
use affinity_forwarding_agent::synproxy::{SynProxyState, TcpOptions};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf, Worker};
use common::{
    batch, buffer, checksums_ok, flow_msg, from, run_one, wildcard_msg, Wc, BACKEND, CLIENT, MGR,
    SEC, VIP,
};
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
    let w = Wc {
        ttl: 3600,
        admission,
        ..Wc::to_vip(10)
    };
    wildcard_msg(MGR, 1, &[w], None)
}

fn install(a: &Agent, admission: Option<AdmissionAction>) {
    let out = a.handle_control(0, from(MGR), &vip_wildcard(admission));
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    assert_eq!(a.wildcard_entries(0).len(), 1);
}

fn run(w: &mut Worker, now: u64, pkt: &[u8]) -> (Disposition, Vec<u8>) {
    run_one(w, now, pkt, HEADROOM)
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

/// `pkt` (IPv4+TCP from `build::tcp`, no IP options) with `opts` in its
/// TCP header (a multiple of 4 bytes), the window 4096 and IP
/// identification 0 this file's option-carrying packets have; the lengths
/// and both checksums made good again.
fn with_options(pkt: Vec<u8>, opts: &TcpOptions) -> Vec<u8> {
    use wire::{ipv4, tcp};
    let mut o = [0u8; 20];
    let n = opts.emit(&mut o);
    let at = ipv4::HEADER_LEN + tcp::HEADER_LEN;
    let mut p = [&pkt[..at], &o[..n], &pkt[at..]].concat();
    let total = p.len() as u16;
    p[ipv4::field::LENGTH].copy_from_slice(&total.to_be_bytes());
    p[ipv4::field::IDENT].fill(0);
    p[ipv4::field::CHECKSUM].fill(0);
    let c = wire::checksum::ipv4_header_checksum(&p[..ipv4::HEADER_LEN]);
    p[ipv4::field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    let l4 = &mut p[ipv4::HEADER_LEN..];
    l4[tcp::field::DATA_OFF] = tcp::data_off(tcp::HEADER_LEN + n);
    l4[tcp::field::WIN_SIZE].copy_from_slice(&4096u16.to_be_bytes());
    l4[tcp::field::CHECKSUM].fill(0);
    let info = wire::parse_ipv4(&p).unwrap();
    let c = wire::checksum::l4_checksum(&p, &info).unwrap();
    p[ipv4::HEADER_LEN..][tcp::field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    p
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

/// The options of the TCP header of `p` (no IP options).
fn options_of(p: &[u8]) -> TcpOptions {
    let thl = (p[32] >> 4) as usize * 4;
    TcpOptions::parse(&p[40..20 + thl])
}

const CLIENT_OPTS: TcpOptions = TcpOptions {
    mss: Some(1460),
    wscale: Some(8),
    sack_permitted: true,
    timestamps: Some((12345, 0)),
};

fn proxied_admission() -> AdmissionAction {
    AdmissionAction {
        flags: AdmissionAction::SYN_PROXY,
        ..AdmissionAction::default()
    }
}

/// Client SYN → the agent's SYN-ACK; the cookie (its ISN) and the
/// SYN-ACK's TSval.
fn handshake_syn(a: &Agent, w: &mut Worker, now: u64, cport: u16) -> (u32, u32) {
    let punted = a.counter(Counter::Punted);
    let syn = with_options(
        from_client(cport, build::TCP_SYN, 1000, 0, &[]),
        &CLIENT_OPTS,
    );
    let mut buf = buffer(&syn, HEADROOM);
    let len = syn.len();
    let mut pkts = [PacketBuf::new(&mut buf, HEADROOM, len)];
    let mut out = [Disposition::Drop(Counter::Packets)];
    w.process_batch(now, &mut pkts, &mut out);
    assert_eq!(out[0], Disposition::Pass);
    let sa_len = pkts[0].len;
    let sa = buf[HEADROOM..HEADROOM + sa_len].to_vec();
    assert!(checksums_ok(&sa), "SYN-ACK checksums");
    let info = wire::parse_ipv4(&sa).unwrap();
    assert_eq!(info.total_len, sa_len);
    assert_eq!(
        (
            info.key.src_addr,
            info.key.src_port,
            info.key.dst_addr,
            info.key.dst_port
        ),
        (VIP, 80, CLIENT, cport)
    );
    assert_eq!(info.tcp_flags, build::TCP_SYN | build::TCP_ACK);
    assert_eq!(u32_at(&sa, 28), 1001, "acknowledges the client's ISN");
    let o = options_of(&sa);
    assert_eq!(o.mss, Some(1460));
    assert_eq!(
        o.wscale,
        Some(affinity_forwarding_agent::synproxy::ADVERTISED_WSCALE)
    );
    assert!(o.sack_permitted);
    let (tsval, tsecr) = o.timestamps.unwrap();
    assert_eq!(tsecr, 12345);
    assert_eq!(
        tsval & 0x1f,
        8 | 0x10,
        "window scale 8 and SACK in the TSval"
    );
    assert_eq!(a.counter(Counter::Punted), punted, "a SYN punts nothing");
    assert!(w.take_messages().is_empty());
    (u32_at(&sa, 24), tsval)
}

/// A TCP segment from the client's port `cport` to VIP:80 (see
/// `build::tcp`).
fn from_client(cport: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    build::tcp(CLIENT, cport, VIP, 80, flags, seq, ack, payload)
}

/// A SYN-proxied service with its backends' side installed, and a client
/// (port `cport`) through the handshake: the agent, its worker, the cookie
/// ACK that proves the connection (not yet sent), the cookie and the
/// SYN-ACK's TSval.
fn proved(cport: u16) -> (Arc<Agent>, Worker, Vec<u8>, u32, u32) {
    let (a, mut w) = agent();
    install(&a, Some(proxied_admission()));
    // The backends' side (supports the reverse fixed affinity).
    let out = a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 2, &[Wc::from_backends(11)], None),
    );
    assert!(out.replies.is_empty());
    let (cookie, tsval) = handshake_syn(&a, &mut w, SEC, cport);
    let ack = cookie_ack(cport, cookie, tsval);
    (a, w, ack, cookie, tsval)
}

fn cookie_ack(cport: u16, cookie: u32, tsval: u32) -> Vec<u8> {
    let opts = TcpOptions {
        timestamps: Some((12346, tsval)),
        ..TcpOptions::default()
    };
    with_options(
        from_client(cport, build::TCP_ACK, 1001, cookie.wrapping_add(1), &[]),
        &opts,
    )
}

#[test]
fn syn_proxy_answers_syns_and_only_a_cookie_ack_becomes_an_interest_match() {
    let (a, mut w) = agent();
    install(&a, Some(proxied_admission()));
    let (cookie, tsval) = handshake_syn(&a, &mut w, SEC, 40000);
    // A wrong cookie, a forged ACK for another port, a lone RST: dropped.
    for bad in [
        cookie_ack(40000, cookie ^ 0x100, tsval),
        cookie_ack(40001, cookie, tsval),
        build::tcp(CLIENT, 40000, VIP, 80, build::TCP_RST, 1001, 0, &[]),
    ] {
        assert_eq!(
            run(&mut w, SEC, &bad).0,
            Disposition::Drop(Counter::SynProxyBadCookie)
        );
    }
    assert_eq!(a.counter(Counter::SynProxyBadCookie), 3);
    assert_eq!(a.counter(Counter::Punted), 0);
    // The right cookie, a minute later (the next secret generation).
    let ack = cookie_ack(40000, cookie, tsval);
    let (d, buf) = run(&mut w, 65 * SEC, &ack);
    let Disposition::Punt { start, .. } = d else {
        panic!("{d:?}")
    };
    let msg = ServiceMessage::parse(&buf[start..]).unwrap();
    assert_eq!(msg.msg_type(), MessageType::InterestMatchWildcard);
    assert_eq!(msg.ip_packet().unwrap(), &ack[..]);
    let reason = msg.affinities().next().unwrap().identifier.unwrap().reason;
    assert_eq!(
        reason & (interest::SYN | interest::ACK),
        interest::SYN | interest::ACK
    );
    let data = msg.fa_interest_data().unwrap();
    assert_eq!(data.len(), 16 + SynProxyState::LEN);
    let state = SynProxyState::decode(&data[16..]).unwrap();
    assert_eq!(
        state,
        SynProxyState {
            client_isn: 1000,
            cookie_isn: cookie,
            mss: 1460,
            wscale: Some(8),
            sack_permitted: true,
            timestamps: Some((12346, tsval)),
        }
    );
    assert_eq!(a.counter(Counter::SynProxyProved), 1);
    // Past two generations the cookie is refused.
    assert_eq!(
        run(&mut w, 200 * SEC, &ack).0,
        Disposition::Drop(Counter::SynProxyBadCookie)
    );
}

/// The sequence and acknowledgment numbers of a packet without IP options.
fn seq_ack(p: &[u8]) -> (u32, u32) {
    (u32_at(p, 24), u32_at(p, 28))
}

#[test]
fn syn_proxy_splices_the_backend_connection_with_sequence_adjust_both_ways() {
    let cport = 40000;
    let (a, mut w, ack, cookie, tsval) = proved(cport);
    let (d, buf) = run(&mut w, SEC, &ack);
    let Disposition::Punt { start, .. } = d else {
        panic!("{d:?}")
    };
    let msg = ServiceMessage::parse(&buf[start..]).unwrap();
    let echo = msg.fa_interest_data().unwrap().to_vec();

    // The manager answers as usual: NAT to the backend, echoing the data
    // and returning the ACK. The agent keeps the ACK and sends the SYN.
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 3, cport, 30, Some(&echo), Some(&ack)),
    );
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    assert_eq!(out.returned.len(), 1);
    assert_eq!(a.counter(Counter::SynProxyBackendSyn), 1);
    let r = &out.returned[0];
    let mut sbuf = buffer(&r.packet, 64);
    let len = r.packet.len();
    let d = w.process_returned(SEC, &mut PacketBuf::new(&mut sbuf, 64, len), r.rank_limit);
    assert_eq!(d, Disposition::Pass);
    let syn = &sbuf[64..];
    assert!(checksums_ok(syn));
    let info = wire::parse_ipv4(syn).unwrap();
    assert_eq!(info.tcp_flags, build::TCP_SYN);
    assert_eq!((info.key.src_addr, info.key.src_port), (CLIENT, cport));
    assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
    assert_eq!(seq_ack(syn).0, 1000, "the client's ISN");
    assert_eq!(
        options_of(syn),
        TcpOptions {
            mss: Some(1460),
            wscale: Some(8),
            sack_permitted: true,
            timestamps: Some((12346, 0)),
        },
        "the client's original options"
    );

    // The backend's SYN-ACK: swallowed; the client's ACK goes out in its
    // place, acknowledging the backend's ISN.
    let b_isn = 0xfff0_0000u32; // wraps during the test
    let opts = TcpOptions {
        mss: Some(1400),
        wscale: Some(7),
        sack_permitted: true,
        timestamps: Some((777, 12346)),
    };
    let synack = with_options(
        build::tcp(
            BACKEND,
            8080,
            CLIENT,
            cport,
            build::TCP_SYN | build::TCP_ACK,
            b_isn,
            1001,
            &[],
        ),
        &opts,
    );
    let (d, buf) = run(&mut w, SEC, &synack);
    assert_eq!(d, Disposition::Pass);
    assert_eq!(a.counter(Counter::SynProxySpliced), 1);
    let out_ack = &buf[HEADROOM..HEADROOM + ack.len()];
    assert!(checksums_ok(out_ack));
    let info = wire::parse_ipv4(out_ack).unwrap();
    assert_eq!(info.tcp_flags, build::TCP_ACK);
    assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
    assert_eq!(seq_ack(out_ack), (1001, b_isn.wrapping_add(1)));
    assert_eq!(
        options_of(out_ack).timestamps,
        Some((12346, 777)),
        "the echo of the agent's TSval becomes the backend's"
    );

    // Data both ways, 70 000 bytes on (past the backend ISN's wrap).
    let req = b"GET / HTTP/1.0\r\n\r\n";
    // Segments between endpoints (address, port).
    let (client, vip, backend) = ((CLIENT, cport), (VIP, 80), (BACKEND, 8080));
    let seg = |from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), flags: u8, seq: u32, ack: u32, data| {
        build::tcp(from.0, from.1, to.0, to.1, flags, seq, ack, data)
    };
    let push = build::TCP_ACK | build::TCP_PSH;
    let data = seg(client, vip, push, 1001, cookie.wrapping_add(70_001), req);
    let (d, buf) = run(&mut w, 2 * SEC, &data);
    assert_eq!(d, Disposition::Pass);
    let expected = seg(client, backend, push, 1001, b_isn.wrapping_add(70_001), req);
    assert_eq!(
        &buf[HEADROOM..],
        &expected[..],
        "client → backend, acknowledgment moved"
    );
    assert!(checksums_ok(&buf[HEADROOM..]));
    let resp = b"HTTP/1.0 200 OK\r\n\r\n";
    let (ack, rsp_ack) = (build::TCP_ACK, 1001 + req.len() as u32);
    let check_reply = |w: &mut Worker, now: u64| {
        let rsp = seg(
            backend,
            client,
            ack,
            b_isn.wrapping_add(70_001),
            rsp_ack,
            resp,
        );
        let (d, buf) = run(w, now, &rsp);
        assert_eq!(d, Disposition::Pass);
        let expected = seg(vip, client, ack, cookie.wrapping_add(70_001), rsp_ack, resp);
        assert_eq!(
            &buf[HEADROOM..],
            &expected[..],
            "backend → client, sequence moved"
        );
        assert!(checksums_ok(&buf[HEADROOM..]));
    };
    check_reply(&mut w, 2 * SEC);
    // The manager's refresh (no sequence adjust in it) keeps the splice.
    let out = a.handle_control(3 * SEC, from(MGR), &flow_msg(MGR, 4, cport, 30, None, None));
    assert!(out.replies.is_empty() && out.returned.is_empty());
    check_reply(&mut w, 3 * SEC);
    assert_eq!(
        a.counter(Counter::Punted),
        1,
        "only the proved ACK reached the manager"
    );

    // Timestamps: the backend's TSval clock is moved onto the agent's
    // (which the client saw in the SYN-ACK), the client's echo back.
    let ts = |val, ecr| TcpOptions {
        timestamps: Some((val, ecr)),
        ..TcpOptions::default()
    };
    let b_seq = b_isn.wrapping_add(1);
    let bdata = with_options(
        build::tcp(
            BACKEND,
            8080,
            CLIENT,
            cport,
            build::TCP_ACK,
            b_seq,
            1001,
            resp,
        ),
        &ts(800, 12346),
    );
    let (d, buf) = run(&mut w, 3 * SEC, &bdata);
    assert_eq!(d, Disposition::Pass);
    let got = &buf[HEADROOM..];
    assert!(checksums_ok(got));
    assert_eq!(
        options_of(got).timestamps,
        Some((tsval.wrapping_add(800 - 777), 12346))
    );
    assert_eq!(seq_ack(got), (cookie.wrapping_add(1), 1001));
    let cdata = with_options(
        from_client(
            cport,
            build::TCP_ACK,
            1001,
            cookie.wrapping_add(1 + resp.len() as u32),
            req,
        ),
        &ts(12400, tsval.wrapping_add(23)),
    );
    let (d, buf) = run(&mut w, 3 * SEC, &cdata);
    assert_eq!(d, Disposition::Pass);
    let got = &buf[HEADROOM..];
    assert!(checksums_ok(got));
    assert_eq!(options_of(got).timestamps, Some((12400, 800)));
    assert_eq!(
        seq_ack(got),
        (1001, b_isn.wrapping_add(1 + resp.len() as u32))
    );
}

#[test]
fn a_new_admission_action_takes_effect_and_a_refresh_keeps_the_buckets() {
    let (a, mut w) = agent();
    let tight = |burst| AdmissionAction {
        flags: 0,
        new_rate: 1,
        new_burst: burst,
        known_rate: 0,
        known_burst: 0,
    };
    install(&a, Some(tight(2)));
    let punts = |w: &mut Worker, from: u16| {
        (0..4)
            .filter(|i| is_punt(run(w, SEC, &syn_from(from + i)).0))
            .count()
    };
    assert_eq!(punts(&mut w, 1000), 2);
    // The same wildcard again (a refresh): the empty bucket stays empty.
    install(&a, Some(tight(2)));
    assert_eq!(punts(&mut w, 2000), 0);
    // New budgets: a fresh bucket of the new depth.
    install(&a, Some(tight(3)));
    assert_eq!(punts(&mut w, 3000), 3);
    assert_eq!(a.counter(Counter::PuntAdmitDropNew), 2 + 4 + 1);
}

#[test]
fn ten_thousand_spoofed_syns_at_the_syn_proxy_punt_nothing_and_install_nothing() {
    let (a, mut w) = agent();
    install(&a, Some(proxied_admission()));
    const HEAD: usize = 64;
    const SLOT: usize = HEAD + 64;
    let mut bufs = vec![0u8; 256 * SLOT];
    // A sentinel no SYN-ACK answer can be: every slot must be overwritten.
    let mut out = [Disposition::Drop(Counter::DropInternalError); 256];
    let mut x = 0x9e37_79b9_u32;
    // Bounded: 40 batches of 250 SYNs from random sources in 198.18.0.0/15.
    for b in 0..40u64 {
        let syns: Vec<Vec<u8>> = (0..250)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let src = Ipv4Addr::from(0xc612_0000 | (x & 0x1_ffff));
                let sport = 1024 + (x >> 20) as u16;
                build::tcp(src, sport, VIP, 80, build::TCP_SYN, x, 0, &[])
            })
            .collect();
        let mut pkts = batch(&mut bufs, SLOT, HEAD, &syns);
        w.process_batch(SEC + b * SEC / 40, &mut pkts, &mut out[..250]);
        assert!(out[..250].iter().all(|d| *d == Disposition::Pass));
        assert!(w.take_messages().is_empty());
    }
    assert_eq!(a.counter(Counter::SynProxyAnswered), 10_000);
    assert_eq!(a.counter(Counter::Punted), 0);
    assert_eq!(a.fixed_count(2 * SEC), 0);
    assert_eq!(a.held_packets(), 0);
}

/// The actions bits of the capabilities segment in `hello`.
fn hello_actions(hello: &[u8]) -> Option<u32> {
    let m = ServiceMessage::parse(hello).ok()?;
    assert_eq!(m.msg_type(), MessageType::AgentHello);
    m.segments().find_map(|(s, _)| match s {
        affinity_api::Segment::Capabilities(c) => Some(c.actions),
        _ => None,
    })
}

#[test]
fn the_hello_lists_the_admission_action_with_the_seed_actions() {
    use affinity_api::seg;
    let (a, _) = agent();
    let bit = |t: u16| 1u32 << t;
    // Bits 10-14 (NAT, advertise, sequence adjust, interest, action list)
    // and 20 (admission), with feature bit 0 (handshake marks):
    // PROTOCOL.md, segment 17.
    assert_eq!(hello_actions(&a.build_hello()), Some(0x0010_7c01));
    assert_ne!(
        hello_actions(&a.build_hello()).unwrap_or(0) & bit(seg::ADMISSION_ACTION),
        0
    );
    // A disabled action leaves the list; admission stays.
    let b = Agent::new(AgentConfig {
        disabled_actions: vec![seg::NAT_ACTION],
        ..AgentConfig::default()
    });
    assert_eq!(
        hello_actions(&b.build_hello()),
        Some(0x0010_7c01 & !bit(seg::NAT_ACTION))
    );
    // Without per-flow counters there are no marks (nor reports): the
    // feature bit is not advertised.
    let c = Agent::new(AgentConfig {
        per_flow_counters: false,
        ..AgentConfig::default()
    });
    assert_eq!(hello_actions(&c.build_hello()), Some(0x0010_7c00));
}

/// Packets `pkts` through worker `w` at `now` as one batch (as a VPP frame
/// carries the client's ACK and its request together): each one's
/// disposition and its slot of the batch's buffer (`HEADROOM` bytes of
/// headroom, then the packet, to its length after processing).
fn run_batch(w: &mut Worker, now: u64, pkts: &[Vec<u8>]) -> Vec<(Disposition, Vec<u8>)> {
    let slot = HEADROOM + 2048;
    let mut bufs = vec![0u8; slot * pkts.len()];
    let mut bs = batch(&mut bufs, slot, HEADROOM, pkts);
    let mut out = vec![Disposition::Pass; pkts.len()];
    w.process_batch(now, &mut bs, &mut out);
    let lens: Vec<usize> = bs.iter().map(|b| b.len).collect();
    drop(bs);
    out.into_iter()
        .zip(bufs.chunks(slot).zip(lens))
        .map(|(d, (b, len))| (d, b[..HEADROOM + len].to_vec()))
        .collect()
}

/// The client's request right behind its cookie ACK (same cookie, TSecr
/// the SYN-ACK's TSval).
fn request(cport: u16, cookie: u32, tsval: u32, body: &[u8]) -> Vec<u8> {
    let opts = TcpOptions {
        timestamps: Some((12346, tsval)),
        ..TcpOptions::default()
    };
    let flags = build::TCP_ACK | build::TCP_PSH;
    with_options(
        from_client(cport, flags, 1001, cookie.wrapping_add(1), body),
        &opts,
    )
}

#[test]
fn syn_proxy_keeps_the_clients_first_data_from_the_backend_until_the_splice_then_sends_it() {
    let cport = 40000;
    let (a, mut w, ack, cookie, tsval) = proved(cport);
    // The client's request right behind its ACK, with the same valid
    // cookie, in the next batch, before the manager's answer is back: the
    // connection is proved already, so the request is held as early data,
    // not punted as a second proof (before, both were punted and the
    // manager saw two interest matches for one connection).
    let req = request(cport, cookie, tsval, b"GET / HTTP/1.0\r\n\r\n");
    let (d, buf) = run(&mut w, SEC, &ack);
    let echo = punt_echo(d, &buf);
    assert_eq!(
        run(&mut w, SEC, &req).0,
        Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
    );
    assert!(w.take_messages().is_empty(), "no second match out of line");
    assert_eq!(a.counter(Counter::SynProxyProved), 1);
    assert_eq!(a.counter(Counter::Punted), 1);
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), 1);
    let echoes = [echo];
    // The answer to the ACK: kept, the backend SYN goes out.
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 3, cport, 30, Some(&echoes[0]), Some(&ack)),
    );
    assert_eq!(out.returned.len(), 1, "the backend SYN");
    assert_eq!(a.counter(Counter::SynProxyBackendSyn), 1);
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), 1);
    // Its retransmission on the fixed affinity, the backend not yet
    // answered: it would reach the backend with an acknowledgment in the
    // cookie's space and draw a reset. Held too, nothing leaves.
    assert_eq!(
        run(&mut w, SEC, &req).0,
        Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
    );
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), 2);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 0);
    assert!(w.take_released().is_empty());
    let synack = with_options(
        build::tcp(
            BACKEND,
            8080,
            CLIENT,
            cport,
            build::TCP_SYN | build::TCP_ACK,
            0x1234_5678,
            1001,
            &[],
        ),
        &TcpOptions {
            timestamps: Some((777, 12346)),
            ..TcpOptions::default()
        },
    );
    // The SYN-ACK's buffer is consumed: the kept ACK leaves first through
    // the released queue, then both held copies, adjusted, to the backend
    // (in the SYN-ACK's buffer, VPP sent the ACK after them).
    assert_eq!(
        run(&mut w, SEC, &synack).0,
        Disposition::Consumed(Counter::SynProxySpliced)
    );
    assert_eq!(a.counter(Counter::SynProxySpliced), 1);
    let released = w.take_released();
    assert_eq!(released.len(), 3);
    let ack_info = wire::parse_ipv4(&released[0].0).unwrap();
    assert_eq!(ack_info.tcp_flags, build::TCP_ACK, "the ACK first");
    assert_eq!(ack_info.total_len, ack_info.l4_offset + 32, "no payload");
    for (p, d) in &released {
        assert_eq!(*d, Disposition::Pass);
        assert!(checksums_ok(p));
        let info = wire::parse_ipv4(p).unwrap();
        assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
        assert_eq!(seq_ack(p), (1001, 0x1234_5679));
    }
    assert_eq!(a.counter(Counter::SynProxyEarlyDataReleased), 2);
    // Spliced: the request goes to the backend, acknowledging its ISN.
    let (d, buf) = run(&mut w, SEC, &req);
    assert_eq!(d, Disposition::Pass);
    let out_req = &buf[HEADROOM..HEADROOM + req.len()];
    assert!(checksums_ok(out_req));
    let info = wire::parse_ipv4(out_req).unwrap();
    assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
    assert_eq!(seq_ack(out_req), (1001, 0x1234_5679));
    // A late answer to a repeated proof (the request, punted again after
    // `REPROVE_NS` without an answer; it echoes the same state), after the
    // splice: the packet goes on as returned, through the adjusted flow; no
    // new SYN.
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 5, cport, 30, Some(&echoes[0]), Some(&req)),
    );
    assert_eq!(out.returned.len(), 1);
    assert_eq!(out.returned[0].packet, req);
    assert_eq!(a.counter(Counter::SynProxyBackendSyn), 1);
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), 2);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 0);
}

#[test]
fn a_proved_flow_is_held_back_before_the_control_path_makes_it_pending() {
    let cport = 40000;
    let (a, mut w, ack, cookie, _) = proved(cport);
    assert!(matches!(run(&mut w, SEC, &ack).0, Disposition::Punt { .. }));
    // The flow's fixed affinity alone, as a worker can see it between the
    // control thread installing the manager's answer and making the flow
    // pending: the client's request must not reach the backend yet.
    let out = a.handle_control(SEC, from(MGR), &flow_msg(MGR, 3, cport, 30, None, None));
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    let req = build::tcp(
        CLIENT,
        cport,
        VIP,
        80,
        build::TCP_ACK | build::TCP_PSH,
        1001,
        cookie.wrapping_add(1),
        b"GET /",
    );
    assert_eq!(
        run(&mut w, SEC, &req).0,
        Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
    );
    // Never spliced: forgotten after the pending time (10 s).
    let later = SEC + affinity_forwarding_agent::synproxy::PENDING_NS + 1;
    assert_eq!(run(&mut w, later, &req).0, Disposition::Pass);
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), 1);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 0);
    assert!(w.take_released().is_empty());
}

/// Where the client's request, sent right behind its cookie ACK, meets the
/// agent before the splice.
#[derive(Debug, Clone, Copy)]
enum EarlyPath {
    /// In the same batch as the ACK (one VPP frame): held on the wildcard,
    /// the connection proved by the ACK just before it.
    SameBatch,
    /// In a later batch, before the manager's answer: held on the wildcard.
    BeforeAnswer,
    /// After [`synproxy::REPROVE_NS`] without the manager's answer: it
    /// proves the connection again (the first punt might be lost) and
    /// comes back in the manager's answer to that, which arrives while the
    /// connection is pending.
    Reproved,
    /// After the manager's answer: on the flow's fixed affinity.
    FixedAffinity,
}

/// The SNAT address and port of `snat_flow_msg`'s flows.
const SNAT: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 200), 61000);

/// [`flow_msg`] with source NAT: client:cport → VIP:80 ⇒ SNAT → BACKEND:8080,
/// and back BACKEND:8080 → SNAT ⇒ VIP:80 → client:cport.
fn snat_flow_msg(seq: u64, cport: u16, echo: Option<&[u8]>, packet: Option<&[u8]>) -> Vec<u8> {
    use affinity_api::{AffinityIdentifier, AffinityKey, NatAction, Segment};
    let key = |s: (Ipv4Addr, u16), d: (Ipv4Addr, u16)| AffinityKey {
        protocol: wire::TCP,
        src_addr: s.0,
        dst_addr: d.0,
        src_port: s.1,
        dst_port: d.1,
    };
    let id = |id| Segment::AffinityIdentifier(AffinityIdentifier { id, reason: 0 });
    let both =
        NatAction::SRC_ADDR | NatAction::SRC_PORT | NatAction::DST_ADDR | NatAction::DST_PORT;
    let fwd_nat = Segment::NatAction(NatAction {
        flags: both,
        src_addr: SNAT.0,
        src_port: SNAT.1,
        dst_addr: BACKEND,
        dst_port: 8080,
    });
    let rev_nat = Segment::NatAction(NatAction {
        flags: both,
        src_addr: VIP,
        src_port: 80,
        dst_addr: CLIENT,
        dst_port: cport,
    });
    let fwd: &[Segment<'_>] = &[id(1), fwd_nat];
    let rev: &[Segment<'_>] = &[id(2), rev_nat];
    common::fixed_msg(
        MGR,
        seq,
        &[
            (key((CLIENT, cport), (VIP, 80)), 30, fwd),
            (key((BACKEND, 8080), SNAT), 30, rev),
        ],
        echo,
        packet,
    )
}

#[test]
fn early_request_reaches_the_backend_once_after_the_splice_adjusted_and_translated() {
    for snat in [false, true] {
        for path in [
            EarlyPath::SameBatch,
            EarlyPath::BeforeAnswer,
            EarlyPath::Reproved,
            EarlyPath::FixedAffinity,
        ] {
            early_request_case(snat, path);
        }
    }
}

fn early_request_case(snat: bool, path: EarlyPath) {
    let case = format!("snat {snat}, {path:?}");
    let cport = 40000;
    let (a, mut w, ack, cookie, tsval) = proved(cport);
    let ts = |val, ecr| TcpOptions {
        timestamps: Some((val, ecr)),
        ..TcpOptions::default()
    };
    let body = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
    let push = build::TCP_ACK | build::TCP_PSH;
    let req = with_options(
        from_client(cport, push, 1001, cookie.wrapping_add(1), body),
        &ts(12347, tsval),
    );
    let answer = |seq: u64, echo: Option<&[u8]>, pkt: Option<&[u8]>| {
        if snat {
            snat_flow_msg(seq, cport, echo, pkt)
        } else {
            flow_msg(MGR, seq, cport, 30, echo, pkt)
        }
    };
    // Where the backend sees the client.
    let client_seen = if snat { SNAT } else { (CLIENT, cport) };
    // What left the agent toward the backend, with its disposition.
    let mut sent: Vec<(Disposition, Vec<u8>)> = Vec::new();
    let echo_of = |d: Disposition, buf: &[u8]| {
        let Disposition::Punt { start, .. } = d else {
            panic!("{case}: {d:?}")
        };
        let msg = ServiceMessage::parse(&buf[start..]).unwrap();
        msg.fa_interest_data().unwrap().to_vec()
    };
    let held = Disposition::Consumed(Counter::SynProxyEarlyDataHeld);
    let echo_ack = match path {
        EarlyPath::SameBatch => {
            let r = run_batch(&mut w, SEC, &[ack.clone(), req.clone()]);
            assert_eq!(r[1].0, held, "{case}: the request");
            echo_of(r[0].0, &r[0].1)
        }
        _ => {
            let (d, buf) = run(&mut w, SEC, &ack);
            echo_of(d, &buf)
        }
    };
    // What the manager's answer to the ACK finds: from here on, time is
    // `now` (the reproof waits for `REPROVE_NS`).
    let now = match path {
        EarlyPath::Reproved => SEC + affinity_forwarding_agent::synproxy::REPROVE_NS,
        _ => SEC,
    };
    let echo_req = match path {
        EarlyPath::BeforeAnswer => {
            assert_eq!(run(&mut w, SEC, &req).0, held, "{case}");
            None
        }
        EarlyPath::Reproved => {
            // Just before the reproof time: still early data.
            let (d, _) = run(&mut w, now - 1, &req);
            assert_eq!(d, held, "{case}");
            let (d, buf) = run(&mut w, now, &req);
            Some(echo_of(d, &buf))
        }
        EarlyPath::SameBatch | EarlyPath::FixedAffinity => None,
    };
    let proofs = match path {
        EarlyPath::Reproved => 2,
        _ => 1,
    };
    assert_eq!(a.counter(Counter::SynProxyProved), proofs, "{case}");
    assert_eq!(a.counter(Counter::Punted), proofs, "{case}");
    assert_eq!(a.counter(Counter::SynProxyReproved), proofs - 1, "{case}");
    assert!(w.take_messages().is_empty(), "{case}");
    // The manager's answer to the ACK: the backend SYN goes out.
    let out = a.handle_control(now, from(MGR), &answer(3, Some(&echo_ack), Some(&ack)));
    assert!(out.replies.is_empty(), "{case}: {:?}", out.replies);
    assert_eq!(out.returned.len(), 1, "{case}: the backend SYN");
    let r = &out.returned[0];
    let mut sbuf = buffer(&r.packet, 64);
    let len = r.packet.len();
    let d = w.process_returned(now, &mut PacketBuf::new(&mut sbuf, 64, len), r.rank_limit);
    assert_eq!(d, Disposition::Pass, "{case}");
    let syn = sbuf[64..].to_vec();
    let info = wire::parse_ipv4(&syn).unwrap();
    assert_eq!(info.tcp_flags, build::TCP_SYN, "{case}");
    assert_eq!(
        (info.key.src_addr, info.key.src_port),
        client_seen,
        "{case}"
    );
    // The request meets the agent before the backend answers: held.
    match path {
        EarlyPath::Reproved => {
            let out = a.handle_control(now, from(MGR), &answer(4, echo_req.as_deref(), Some(&req)));
            assert!(out.returned.is_empty(), "{case}: no second SYN, no request");
        }
        EarlyPath::FixedAffinity => {
            let (d, _) = run(&mut w, now, &req);
            assert_eq!(d, held, "{case}");
        }
        EarlyPath::SameBatch | EarlyPath::BeforeAnswer => {}
    }
    // The reproved path held the request twice: before the reproof, and
    // the reproof's answer.
    let copies = match path {
        EarlyPath::Reproved => 2,
        _ => 1,
    };
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), copies, "{case}");
    assert_eq!(a.counter(Counter::SynProxyBackendSyn), 1, "{case}");
    assert!(
        w.take_released().is_empty(),
        "{case}: nothing before the splice"
    );

    // The backend's SYN-ACK: the kept ACK goes out in its place, then the
    // held request.
    let b_isn = 0xffff_fff0u32; // the backend's sequence space wraps
    let (bsrc, bdst) = ((BACKEND, 8080), client_seen);
    let synack = with_options(
        build::tcp(
            bsrc.0,
            bsrc.1,
            bdst.0,
            bdst.1,
            build::TCP_SYN | build::TCP_ACK,
            b_isn,
            1001,
            &[],
        ),
        &ts(777, 12346),
    );
    // Its buffer is consumed; the kept ACK, then the held request, leave in
    // that order through the released queue (the ACK in the SYN-ACK's
    // buffer left after the queue on VPP).
    let (d, _) = run(&mut w, now, &synack);
    assert_eq!(d, Disposition::Consumed(Counter::SynProxySpliced), "{case}");
    sent.extend(w.take_released().into_iter().map(|(p, d)| (d, p)));
    assert_eq!(a.counter(Counter::SynProxySpliced), 1, "{case}");
    assert_eq!(
        sent.len() as u64,
        1 + copies,
        "{case}: the ACK, then the request"
    );
    // Exactly as the client would have sent them to the backend directly
    // (checksums computed in full by the builder).
    let to_backend = |flags, ack, payload: &[u8], opts: &TcpOptions| {
        with_options(
            build::tcp(
                client_seen.0,
                client_seen.1,
                BACKEND,
                8080,
                flags,
                1001,
                ack,
                payload,
            ),
            opts,
        )
    };
    let want_ack = to_backend(build::TCP_ACK, b_isn.wrapping_add(1), &[], &ts(12346, 777));
    let want_req = to_backend(push, b_isn.wrapping_add(1), body, &ts(12347, 777));
    assert_eq!(sent[0], (Disposition::Pass, want_ack), "{case}: the ACK");
    // (Reproved: the copy held before the reproof, then the reproof's;
    // the backend takes the second as a duplicate segment.)
    for r in &sent[1..] {
        assert_eq!(
            *r,
            (Disposition::Pass, want_req.clone()),
            "{case}: the request"
        );
    }
    for (_, p) in &sent {
        assert!(checksums_ok(p), "{case}");
    }
    assert_eq!(
        a.counter(Counter::SynProxyEarlyDataReleased),
        copies,
        "{case}"
    );
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 0, "{case}");
    assert_eq!(a.counter(Counter::SynProxyEarlyDataExpired), 0, "{case}");
    // Nothing else comes out later, and nothing is left held.
    a.tick(now + SEC);
    w.poll_fragments(now + SEC);
    assert!(w.take_released().is_empty(), "{case}");
    assert_eq!(a.syn_proxy_held(), (0, 0), "{case}");
}

#[test]
fn early_data_past_the_per_connection_bounds_is_dropped_and_counted() {
    use affinity_forwarding_agent::synproxy::{EARLY_DATA_BYTES, EARLY_DATA_PACKETS};
    let cport = 40000;
    let (a, mut w, ack, cookie, _) = proved(cport);
    assert!(matches!(run(&mut w, SEC, &ack).0, Disposition::Punt { .. }));
    let out = a.handle_control(SEC, from(MGR), &flow_msg(MGR, 3, cport, 30, None, None));
    assert!(out.replies.is_empty());
    let seg = |i: u32, size: usize| {
        let body = vec![b'x'; size];
        from_client(
            cport,
            build::TCP_ACK,
            1001 + i * 2000,
            cookie.wrapping_add(1),
            &body,
        )
    };
    // Packets: the first EARLY_DATA_PACKETS small ones are held, the next dropped.
    for i in 0..EARLY_DATA_PACKETS as u32 + 2 {
        let want = if (i as usize) < EARLY_DATA_PACKETS {
            Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
        } else {
            Disposition::Drop(Counter::SynProxyEarlyData)
        };
        assert_eq!(run(&mut w, SEC, &seg(i, 100)).0, want, "packet {i}");
    }
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), 4);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 2);
    assert_eq!(a.syn_proxy_held(), (4, 4 * (40 + 100)));

    // Bytes: on another connection, two 3000-byte packets fit in 8 KiB, a
    // third does not; a small one still does.
    let cport = 40001;
    let (a, mut w, ack, cookie, _) = proved(cport);
    assert!(matches!(run(&mut w, SEC, &ack).0, Disposition::Punt { .. }));
    a.handle_control(SEC, from(MGR), &flow_msg(MGR, 3, cport, 30, None, None));
    let seg = |i: u32, size: usize| {
        let body = vec![b'y'; size];
        from_client(
            cport,
            build::TCP_ACK,
            1001 + i * 3000,
            cookie.wrapping_add(1),
            &body,
        )
    };
    let held = Disposition::Consumed(Counter::SynProxyEarlyDataHeld);
    assert_eq!(run(&mut w, SEC, &seg(0, 2960)).0, held);
    assert_eq!(run(&mut w, SEC, &seg(1, 2960)).0, held);
    const { assert!(3 * 3000 > EARLY_DATA_BYTES && 2 * 3000 + 140 <= EARLY_DATA_BYTES) };
    assert_eq!(
        run(&mut w, SEC, &seg(2, 2960)).0,
        Disposition::Drop(Counter::SynProxyEarlyData)
    );
    assert_eq!(run(&mut w, SEC, &seg(3, 100)).0, held);
    assert_eq!(a.counter(Counter::SynProxyEarlyDataHeld), 3);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 1);
    assert_eq!(a.syn_proxy_held(), (3, 6000 + 140));
}

#[test]
fn early_data_of_a_connection_never_spliced_expires_and_is_counted() {
    let cport = 40000;
    let (a, mut w, ack, cookie, _) = proved(cport);
    let (d, buf) = run(&mut w, SEC, &ack);
    let Disposition::Punt { start, .. } = d else {
        panic!("{d:?}")
    };
    let echo = ServiceMessage::parse(&buf[start..])
        .unwrap()
        .fa_interest_data()
        .unwrap()
        .to_vec();
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 3, cport, 30, Some(&echo), Some(&ack)),
    );
    assert_eq!(out.returned.len(), 1, "the backend SYN (never answered)");
    let req = from_client(
        cport,
        build::TCP_ACK | build::TCP_PSH,
        1001,
        cookie.wrapping_add(1),
        b"GET /",
    );
    for _ in 0..2 {
        assert_eq!(
            run(&mut w, SEC, &req).0,
            Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
        );
    }
    assert_eq!(a.syn_proxy_held().0, 2);
    // Within the pending time nothing goes.
    a.tick(5 * SEC);
    assert_eq!(a.counter(Counter::SynProxyEarlyDataExpired), 0);
    assert_eq!(a.syn_proxy_held().0, 2);
    // Past it the connection and its held packets are dropped, counted.
    let later = SEC + affinity_forwarding_agent::synproxy::PENDING_NS + 1;
    a.tick(later);
    assert_eq!(a.counter(Counter::SynProxyEarlyDataExpired), 2);
    assert_eq!(a.syn_proxy_held(), (0, 0));
    // A backend SYN-ACK after that splices nothing and releases nothing.
    let synack = build::tcp(
        BACKEND,
        8080,
        CLIENT,
        cport,
        build::TCP_SYN | build::TCP_ACK,
        0x1234_5678,
        1001,
        &[],
    );
    let _ = run(&mut w, later, &synack);
    assert_eq!(a.counter(Counter::SynProxySpliced), 0);
    assert!(w.take_released().is_empty());
    assert_eq!(a.counter(Counter::SynProxyEarlyDataReleased), 0);
}

/// The agent interest data of the punt `d` in `buf`.
fn punt_echo(d: Disposition, buf: &[u8]) -> Vec<u8> {
    let Disposition::Punt { start, .. } = d else {
        panic!("{d:?}")
    };
    let msg = ServiceMessage::parse(&buf[start..]).unwrap();
    assert_eq!(msg.msg_type(), MessageType::InterestMatchWildcard);
    msg.fa_interest_data().unwrap().to_vec()
}

/// The IPv4 packet at `buf[HEADROOM..]`, to its total length.
fn packet_at(buf: &[u8]) -> Vec<u8> {
    let info = wire::parse_ipv4(&buf[HEADROOM..]).unwrap();
    buf[HEADROOM..HEADROOM + info.total_len].to_vec()
}

/// Packets a worker released, with their dispositions.
type Released = Vec<(Vec<u8>, Disposition)>;

/// Through the manager's answer (`seq`) to proof `ack` (echo `echo`) and
/// the backend's SYN-ACK (ISN `b_isn`, TSval `b_ts`): the backend SYN's
/// sequence number, the client's kept ACK as it left (in the SYN-ACK's
/// buffer, or first in the released queue when early data was held), and
/// the released packets after it.
fn answer_and_splice(
    a: &Agent,
    w: &mut Worker,
    now: u64,
    seq: u64,
    (cport, echo, ack): (u16, &[u8], &[u8]),
    (b_isn, b_ts, client_ts): (u32, u32, u32),
) -> (u32, Vec<u8>, Released) {
    let out = a.handle_control(
        now,
        from(MGR),
        &flow_msg(MGR, seq, cport, 30, Some(echo), Some(ack)),
    );
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    assert_eq!(out.returned.len(), 1, "the backend SYN");
    let r = &out.returned[0];
    let mut sbuf = buffer(&r.packet, 64);
    let len = r.packet.len();
    let d = w.process_returned(now, &mut PacketBuf::new(&mut sbuf, 64, len), r.rank_limit);
    assert_eq!(d, Disposition::Pass);
    let syn = &sbuf[64..];
    assert!(checksums_ok(syn));
    let info = wire::parse_ipv4(syn).unwrap();
    assert_eq!(info.tcp_flags, build::TCP_SYN);
    assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
    let syn_seq = seq_ack(syn).0;
    let synack = with_options(
        build::tcp(
            BACKEND,
            8080,
            CLIENT,
            cport,
            build::TCP_SYN | build::TCP_ACK,
            b_isn,
            syn_seq.wrapping_add(1),
            &[],
        ),
        &TcpOptions {
            timestamps: Some((b_ts, client_ts)),
            ..TcpOptions::default()
        },
    );
    let (d, buf) = run(w, now, &synack);
    let mut released = w.take_released();
    if d == Disposition::Consumed(Counter::SynProxySpliced) {
        assert!(!released.is_empty(), "the ACK is released");
        let (ack, d) = released.remove(0);
        assert_eq!(d, Disposition::Pass);
        (syn_seq, ack, released)
    } else {
        assert_eq!(d, Disposition::Pass);
        (syn_seq, packet_at(&buf), released)
    }
}

#[test]
fn a_reused_tuple_is_answered_by_the_proxy_again_and_spliced_with_new_adjusts() {
    let cport = 40000;
    let (a, mut w, ack, cookie, _) = proved(cport);
    let (d, buf) = run(&mut w, SEC, &ack);
    let echo = punt_echo(d, &buf);
    let (b_isn, b_ts) = (0x1000_0000u32, 777);
    let (syn_seq, out_ack, rest) = answer_and_splice(
        &a,
        &mut w,
        SEC,
        3,
        (cport, &echo, &ack),
        (b_isn, b_ts, 12346),
    );
    assert!(rest.is_empty());
    assert_eq!(syn_seq, 1000);
    assert_eq!(seq_ack(&out_ack), (1001, b_isn.wrapping_add(1)));
    assert_eq!(a.counter(Counter::SynProxySpliced), 1);
    // The splice went to the manager (PROTOCOL.md, "Splice reports").
    assert_eq!(splice_reports(&mut w).len(), 1);

    // The client closes and, the affinities still installed, opens a new
    // connection on the same 5-tuple with another ISN. Its SYN is answered
    // by the proxy with a new cookie; the backend and the manager hear
    // nothing of it.
    let punted = a.counter(Counter::Punted);
    let syn2 = with_options(
        from_client(cport, build::TCP_SYN, 9000, 0, &[]),
        &CLIENT_OPTS,
    );
    let (d, buf) = run(&mut w, 3 * SEC, &syn2);
    assert_eq!(d, Disposition::Pass);
    let sa = packet_at(&buf);
    assert!(checksums_ok(&sa));
    let info = wire::parse_ipv4(&sa).unwrap();
    assert_eq!(
        (info.key.src_addr, info.key.src_port, info.key.dst_addr),
        (VIP, 80, CLIENT)
    );
    assert_eq!(info.tcp_flags, build::TCP_SYN | build::TCP_ACK);
    let (cookie2, acked) = seq_ack(&sa);
    assert_eq!(acked, 9001);
    assert_ne!(cookie2, cookie);
    let tsval2 = options_of(&sa).timestamps.unwrap().0;
    assert_eq!(a.counter(Counter::SynProxyReuseAnswered), 1);
    assert_eq!(a.counter(Counter::Punted), punted);
    assert!(w.take_messages().is_empty(), "not even a tracking copy");

    // A late packet of the old connection still goes on as before.
    let old = from_client(cport, build::TCP_ACK, 1001, cookie.wrapping_add(1), &[]);
    let (d, buf) = run(&mut w, 3 * SEC, &old);
    assert_eq!(d, Disposition::Pass);
    assert_eq!(seq_ack(&packet_at(&buf)), (1001, b_isn.wrapping_add(1)));

    // The new cookie ACK proves the connection: an interest match of the
    // proxy's wildcard, as a new connection's.
    let ack2 = with_options(
        from_client(cport, build::TCP_ACK, 9001, cookie2.wrapping_add(1), &[]),
        &TcpOptions {
            timestamps: Some((20000, tsval2)),
            ..TcpOptions::default()
        },
    );
    let (d, buf) = run(&mut w, 3 * SEC, &ack2);
    let echo2 = punt_echo(d, &buf);
    let state = SynProxyState::decode(&echo2[16..]).unwrap();
    assert_eq!((state.client_isn, state.cookie_isn), (9000, cookie2));
    assert_eq!(a.counter(Counter::Punted), punted + 1);
    // Its request right behind, on the fixed affinity: held.
    let req = with_options(
        from_client(
            cport,
            build::TCP_ACK | build::TCP_PSH,
            9001,
            cookie2.wrapping_add(1),
            b"GET /again",
        ),
        &TcpOptions {
            timestamps: Some((20001, tsval2)),
            ..TcpOptions::default()
        },
    );
    assert_eq!(
        run(&mut w, 3 * SEC, &req).0,
        Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
    );
    // The manager's answer opens the backend connection again (the
    // client's new ISN); the backend's SYN-ACK joins the new halves.
    let (b_isn2, b_ts2) = (0x7000_0000u32, 5000);
    let (syn_seq, out_ack, released) = answer_and_splice(
        &a,
        &mut w,
        3 * SEC,
        4,
        (cport, &echo2, &ack2),
        (b_isn2, b_ts2, 20000),
    );
    assert_eq!(syn_seq, 9000, "the new connection's ISN");
    assert_eq!(a.counter(Counter::SynProxySpliced), 2);
    assert!(checksums_ok(&out_ack));
    assert_eq!(seq_ack(&out_ack), (9001, b_isn2.wrapping_add(1)));
    assert_eq!(options_of(&out_ack).timestamps, Some((20000, b_ts2)));
    assert_eq!(released.len(), 1);
    let (p, d) = &released[0];
    assert_eq!(*d, Disposition::Pass);
    assert!(checksums_ok(p));
    assert_eq!(seq_ack(p), (9001, b_isn2.wrapping_add(1)));
    assert_eq!(options_of(p).timestamps, Some((20001, b_ts2)));
    // The backend's data reaches the client in the new cookie's space.
    let bdata = with_options(
        build::tcp(
            BACKEND,
            8080,
            CLIENT,
            cport,
            build::TCP_ACK,
            b_isn2.wrapping_add(1),
            9011,
            b"OK",
        ),
        &TcpOptions {
            timestamps: Some((b_ts2 + 1, 20001)),
            ..TcpOptions::default()
        },
    );
    let (d, buf) = run(&mut w, 3 * SEC, &bdata);
    assert_eq!(d, Disposition::Pass);
    let got = packet_at(&buf);
    assert!(checksums_ok(&got));
    assert_eq!(seq_ack(&got), (cookie2.wrapping_add(1), 9011));
    assert_eq!(
        options_of(&got).timestamps,
        Some((tsval2.wrapping_add(1), 20001))
    );
}

/// A backend that refuses the agent's SYN (RST, closed port): the client's
/// connection, which the cookie already completed, gets the RST at once,
/// in its own sequence space (the cookie ISN + 1), checksum right; the
/// connection is given up. Failed before: the RST went on with sequence 0,
/// which the client ignores, and it waited for its own timeout (26 s in
/// the new-user trial).
#[test]
fn a_backend_rst_to_a_proxied_syn_reaches_the_client_in_its_sequence_space() {
    let cport = 40000;
    let (a, mut w, ack, cookie, _) = proved(cport);
    let (d, buf) = run(&mut w, SEC, &ack);
    let echo = punt_echo(d, &buf);
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 3, cport, 30, Some(&echo), Some(&ack)),
    );
    assert_eq!(out.returned.len(), 1, "the backend SYN");
    let r = &out.returned[0];
    let mut sbuf = buffer(&r.packet, 64);
    let len = r.packet.len();
    let d = w.process_returned(SEC, &mut PacketBuf::new(&mut sbuf, 64, len), r.rank_limit);
    assert_eq!(d, Disposition::Pass);
    // The backend's RST: sequence 0, acknowledging the client's ISN (1000).
    let rst = build::tcp(
        BACKEND,
        8080,
        CLIENT,
        cport,
        build::TCP_RST | build::TCP_ACK,
        0,
        1001,
        &[],
    );
    let (d, buf) = run(&mut w, SEC, &rst);
    assert_eq!(d, Disposition::Pass);
    let out = packet_at(&buf);
    let expected = build::tcp(
        VIP,
        80,
        CLIENT,
        cport,
        build::TCP_RST | build::TCP_ACK,
        cookie.wrapping_add(1),
        1001,
        &[],
    );
    assert_eq!(out, expected, "translated, in the client's sequence space");
    assert!(checksums_ok(&out));
    assert_eq!(a.counter(Counter::SynProxyBackendRefused), 1);
    // Given up: a late SYN-ACK splices nothing.
    let synack = build::tcp(
        BACKEND,
        8080,
        CLIENT,
        cport,
        build::TCP_SYN | build::TCP_ACK,
        5,
        1001,
        &[],
    );
    let _ = run(&mut w, SEC, &synack);
    assert_eq!(a.counter(Counter::SynProxySpliced), 0);
    // An RST of no pending connection is left alone.
    let (_, buf) = run(&mut w, SEC, &rst);
    assert_eq!(seq_ack(&packet_at(&buf)).0, 0);
}

/// The first proof's punt lost on its way to the manager: the client's
/// retransmissions within `REPROVE_NS` are held (not a second proof), the
/// first one after it is punted as the proof again, and the connection is
/// set up from it with what was held behind it. Failed before the reproof
/// time existed only in the other direction (every retransmission was a
/// new proof); this pins that recovery still works.
#[test]
fn a_lost_proof_is_proved_again_by_a_retransmission_after_the_reproof_time() {
    use affinity_forwarding_agent::synproxy::REPROVE_NS;
    let cport = 40000;
    let (a, mut w, ack, cookie, tsval) = proved(cport);
    let (d, _) = run(&mut w, SEC, &ack);
    assert!(matches!(d, Disposition::Punt { .. }), "{d:?} (lost)");
    // A server-first client sends nothing more; a client-first one its
    // request, retransmitted at about 200 ms, 600 ms, 1.4 s (Linux).
    let req = request(cport, cookie, tsval, b"GET /");
    let held = Disposition::Consumed(Counter::SynProxyEarlyDataHeld);
    assert_eq!(run(&mut w, SEC + REPROVE_NS / 5, &req).0, held);
    assert_eq!(run(&mut w, SEC + 3 * REPROVE_NS / 5, &req).0, held);
    assert_eq!(a.counter(Counter::Punted), 1);
    let t = SEC + 7 * REPROVE_NS / 5;
    let (d, buf) = run(&mut w, t, &req);
    let echo = punt_echo(d, &buf);
    assert_eq!(a.counter(Counter::Punted), 2);
    assert_eq!(a.counter(Counter::SynProxyReproved), 1);
    // Within the next reproof time: held again.
    assert_eq!(run(&mut w, t + 1, &req).0, held);
    // The manager's answer to the reproof sets the connection up: the
    // backend SYN, then at its SYN-ACK the request (the punted one, kept
    // as the connection's first packet), then the held copies, adjusted.
    let (syn_seq, first, rest) = answer_and_splice(
        &a,
        &mut w,
        t,
        3,
        (cport, &echo, &req),
        (0x4000_0000, 777, 12346),
    );
    assert_eq!(syn_seq, 1000);
    assert_eq!(a.counter(Counter::SynProxyBackendSyn), 1);
    assert_eq!(a.counter(Counter::SynProxySpliced), 1);
    assert_eq!(rest.len(), 3);
    for p in std::iter::once(&first).chain(rest.iter().map(|(p, _)| p)) {
        assert!(checksums_ok(p));
        let info = wire::parse_ipv4(p).unwrap();
        assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
        assert_eq!(seq_ack(p), (1001, 0x4000_0001));
        assert_eq!(&p[p.len() - 5..], b"GET /");
    }
    assert_eq!(a.syn_proxy_held(), (0, 0));
}

/// A proof whose punt admission control dropped never reached the
/// manager: the flow's next cookie packet proves it at once (not held
/// behind it for the reproof time).
#[test]
fn a_proof_dropped_by_admission_is_proved_again_at_once() {
    let cport = 40000;
    let (a, mut w) = agent();
    let admission = AdmissionAction {
        new_rate: 10,
        new_burst: 1,
        ..proxied_admission()
    };
    install(&a, Some(admission));
    let out = a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 2, &[Wc::from_backends(11)], None),
    );
    assert!(out.replies.is_empty());
    // Another connection's proof takes the one token.
    let (c2, t2) = handshake_syn(&a, &mut w, SEC, 40001);
    assert!(matches!(
        run(&mut w, SEC, &cookie_ack(40001, c2, t2)).0,
        Disposition::Punt { .. }
    ));
    let (cookie, tsval) = handshake_syn(&a, &mut w, SEC, cport);
    let ack = cookie_ack(cport, cookie, tsval);
    let (d, _) = run(&mut w, SEC, &ack);
    assert!(matches!(d, Disposition::Drop(_)), "{d:?}");
    // Half a second later (within the reproof time) the bucket has a
    // token again: the request proves it.
    let req = request(cport, cookie, tsval, b"GET /");
    let (d, _) = run(&mut w, SEC + SEC / 2, &req);
    assert!(matches!(d, Disposition::Punt { .. }), "{d:?}");
    assert_eq!(a.counter(Counter::SynProxyReproved), 1);
}

/// Once the manager answered a proof, the connection waits for its backend
/// however long that takes: the client's retransmissions are early data,
/// never a proof again.
#[test]
fn an_answered_proof_is_never_proved_again() {
    use affinity_forwarding_agent::synproxy::REPROVE_NS;
    let cport = 40000;
    let (a, mut w, ack, cookie, tsval) = proved(cport);
    let (d, buf) = run(&mut w, SEC, &ack);
    let echo = punt_echo(d, &buf);
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 3, cport, 30, Some(&echo), Some(&ack)),
    );
    assert_eq!(out.returned.len(), 1, "the backend SYN (slow to answer)");
    let req = request(cport, cookie, tsval, b"GET /");
    for i in 1..4 {
        assert_eq!(
            run(&mut w, SEC + i * REPROVE_NS, &req).0,
            Disposition::Consumed(Counter::SynProxyEarlyDataHeld)
        );
    }
    assert_eq!(a.counter(Counter::Punted), 1);
    assert_eq!(a.counter(Counter::SynProxyReproved), 0);
}

/// A reused tuple's new proof whose punt is lost: proved again by the
/// client's retransmission after the reproof time (on the old connection's
/// fixed affinity, as the proof itself was), and spliced from it.
#[test]
fn a_reused_tuples_lost_proof_is_proved_again() {
    use affinity_forwarding_agent::synproxy::REPROVE_NS;
    let cport = 40000;
    let (a, mut w, ack, _, _) = proved(cport);
    let (d, buf) = run(&mut w, SEC, &ack);
    let echo = punt_echo(d, &buf);
    answer_and_splice(
        &a,
        &mut w,
        SEC,
        3,
        (cport, &echo, &ack),
        (0x1000_0000, 777, 12346),
    );
    let t = 3 * SEC;
    let syn2 = with_options(
        from_client(cport, build::TCP_SYN, 9000, 0, &[]),
        &CLIENT_OPTS,
    );
    let (d, buf) = run(&mut w, t, &syn2);
    assert_eq!(d, Disposition::Pass);
    let sa = packet_at(&buf);
    let (cookie2, _) = seq_ack(&sa);
    let tsval2 = options_of(&sa).timestamps.unwrap().0;
    let ts = TcpOptions {
        timestamps: Some((20000, tsval2)),
        ..TcpOptions::default()
    };
    let ack2 = with_options(
        from_client(cport, build::TCP_ACK, 9001, cookie2.wrapping_add(1), &[]),
        &ts,
    );
    let punted = a.counter(Counter::Punted);
    let (d, _) = run(&mut w, t, &ack2);
    assert!(matches!(d, Disposition::Punt { .. }), "{d:?} (lost)");
    let req2 = with_options(
        from_client(
            cport,
            build::TCP_ACK | build::TCP_PSH,
            9001,
            cookie2.wrapping_add(1),
            b"GET /again",
        ),
        &ts,
    );
    let held = Disposition::Consumed(Counter::SynProxyEarlyDataHeld);
    assert_eq!(run(&mut w, t + REPROVE_NS / 5, &req2).0, held);
    assert_eq!(a.counter(Counter::Punted), punted + 1);
    let (d, buf) = run(&mut w, t + REPROVE_NS, &req2);
    let echo2 = punt_echo(d, &buf);
    assert_eq!(a.counter(Counter::Punted), punted + 2);
    assert_eq!(a.counter(Counter::SynProxyReproved), 1);
    let (syn_seq, first, rest) = answer_and_splice(
        &a,
        &mut w,
        t + REPROVE_NS,
        4,
        (cport, &echo2, &req2),
        (0x7000_0000, 5000, 20000),
    );
    assert_eq!(syn_seq, 9000, "the new connection's ISN");
    assert_eq!(a.counter(Counter::SynProxySpliced), 2);
    assert_eq!(rest.len(), 1);
    for p in [&first, &rest[0].0] {
        assert!(checksums_ok(p));
        assert_eq!(seq_ack(p), (9001, 0x7000_0001));
        assert_eq!(&p[p.len() - 10..], b"GET /again");
    }
}

/// The backend's RST refusing the agent's SYN, on a service whose fixed
/// affinities do source NAT too (the backend sees SNAT, not the client):
/// it reaches the client from VIP:80 to its own address and port, in the
/// cookie's sequence space, with a checksum equal to a full recompute. The
/// same RST with a partial checksum (offload: the field holds the
/// pseudo-header sum) leaves with the client's pseudo-header sum, which
/// the NIC completes to that same checksum (the sequence number is not in
/// the pseudo-header).
#[test]
fn a_backend_rst_to_a_proxied_syn_with_source_nat_reaches_the_client_in_its_sequence_space() {
    use affinity_forwarding_agent::wire::checksum;
    for partial in [false, true] {
        let cport = 40000;
        let (a, mut w, ack, cookie, _) = proved(cport);
        let (d, buf) = run(&mut w, SEC, &ack);
        let echo = punt_echo(d, &buf);
        let out = a.handle_control(
            SEC,
            from(MGR),
            &snat_flow_msg(3, cport, Some(&echo), Some(&ack)),
        );
        assert!(out.replies.is_empty(), "{:?}", out.replies);
        assert_eq!(out.returned.len(), 1, "the backend SYN");
        let r = &out.returned[0];
        let mut sbuf = buffer(&r.packet, 64);
        let len = r.packet.len();
        let d = w.process_returned(SEC, &mut PacketBuf::new(&mut sbuf, 64, len), r.rank_limit);
        assert_eq!(d, Disposition::Pass);
        let syn = &sbuf[64..];
        let info = wire::parse_ipv4(syn).unwrap();
        assert_eq!(
            (info.key.src_addr, info.key.src_port),
            SNAT,
            "the backend sees the SNAT address"
        );
        assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
        // The backend's RST to SNAT: sequence 0, acknowledging the client's
        // ISN (1000).
        let mut rst = build::tcp(
            BACKEND,
            8080,
            SNAT.0,
            SNAT.1,
            build::TCP_RST | build::TCP_ACK,
            0,
            1001,
            &[],
        );
        if partial {
            // The pseudo-header's sum, not complemented (what an
            // offloading sender leaves for the NIC).
            let sum = checksum::sum16(&rst[12..20]) + u32::from(wire::TCP) + 20;
            rst[36..38].copy_from_slice(&checksum::fold(sum).to_be_bytes());
        }
        let mut rbuf = buffer(&rst, HEADROOM);
        let mut pkts = [PacketBuf::new(&mut rbuf, HEADROOM, rst.len())];
        if partial {
            pkts[0].l4_partial = true;
        }
        let mut outs = [Disposition::Drop(Counter::Packets)];
        w.process_batch(SEC, &mut pkts, &mut outs);
        assert_eq!(outs[0], Disposition::Pass, "partial {partial}");
        let mut got = packet_at(&rbuf);
        // As the builder makes it (checksums computed in full).
        let expected = build::tcp(
            VIP,
            80,
            CLIENT,
            cport,
            build::TCP_RST | build::TCP_ACK,
            cookie.wrapping_add(1),
            1001,
            &[],
        );
        if partial {
            let sum = checksum::sum16(&got[12..20]) + u32::from(wire::TCP) + 20;
            assert_eq!(
                &got[36..38],
                &checksum::fold(sum).to_be_bytes(),
                "the client's pseudo-header sum"
            );
            // What the NIC does: the segment's sum with the field as it
            // is, complemented.
            let c = !checksum::fold(checksum::sum16(&got[20..]));
            got[36..38].copy_from_slice(&c.to_be_bytes());
        }
        assert_eq!(
            got, expected,
            "partial {partial}: translated, in the client's sequence space"
        );
        let ginfo = wire::parse_ipv4(&got).unwrap();
        assert_eq!(
            checksum::l4_checksum(&got, &ginfo),
            Some(u16::from_be_bytes([got[36], got[37]])),
            "partial {partial}: the TCP checksum is a full recompute's"
        );
        assert!(checksums_ok(&got));
        assert_eq!(a.counter(Counter::SynProxyBackendRefused), 1);
        // Given up: the pending connection and its proof are gone.
        assert_eq!(a.syn_proxy_held(), (0, 0));
    }
}

/// The splice reports a worker queued for its manager (statistics reports
/// whose pairs carry adjusts), each as its (key, ttl, sequence adjust,
/// timestamp adjust) pairs; checks the layout (a zero summary first, each
/// pair's statistics zero) and that it goes to the manager.
type SplicePair = (
    affinity_api::AffinityKey,
    u32,
    affinity_api::SeqAdjustAction,
    Option<affinity_api::TsAdjustAction>,
);
fn splice_reports(w: &mut Worker) -> Vec<Vec<SplicePair>> {
    let mut out = Vec::new();
    for (to, m) in w.take_messages() {
        let msg = ServiceMessage::parse(&m).unwrap();
        if msg.msg_type() != MessageType::StatisticsReport {
            continue;
        }
        assert_eq!(*to.ip(), MGR);
        let segs: Vec<_> = msg
            .segments()
            .map(|(s, _)| s)
            .filter(|s| !matches!(s, affinity_api::Segment::IdentityInfo(_)))
            .collect();
        assert_eq!(
            segs.first(),
            Some(&affinity_api::Segment::Statistics(Default::default()))
        );
        for s in &segs {
            if let affinity_api::Segment::Statistics(st) = s {
                assert_eq!((st.packets, st.bytes), (0, 0));
            }
        }
        out.push(
            msg.affinities()
                .map(|e| {
                    let affinity_api::AffinityRef::Fixed(f) = e.affinity else {
                        panic!("{e:?}")
                    };
                    (
                        f.key,
                        f.ttl,
                        e.seq_adjust.expect("sequence adjust"),
                        e.ts_adjust,
                    )
                })
                .collect(),
        );
    }
    out
}

#[test]
fn a_splice_is_reported_to_the_manager_with_the_adjusts_it_installed() {
    let cport = 40000;
    let (a, mut w, ack, cookie, tsval) = proved(cport);
    let (d, buf) = run(&mut w, SEC, &ack);
    let echo = punt_echo(d, &buf);
    let (b_isn, b_ts) = (0x8000_0010u32, 777);
    let _ = answer_and_splice(
        &a,
        &mut w,
        SEC,
        3,
        (cport, &echo, &ack),
        (b_isn, b_ts, 12346),
    );
    assert_eq!(a.counter(Counter::SynProxySpliced), 1);
    let reports = splice_reports(&mut w);
    assert_eq!(reports.len(), 1, "one report, at once, from the worker");
    assert_eq!(a.counter(Counter::SynProxySpliceReported), 1);
    let client_flow = affinity_api::AffinityKey {
        protocol: 6,
        src_addr: CLIENT,
        dst_addr: VIP,
        src_port: cport,
        dst_port: 80,
    };
    let pairs = &reports[0];
    assert_eq!(pairs.len(), 2);
    let (k, ttl, seq, ts) = pairs[0];
    assert_eq!(k, client_flow);
    assert!((29..=30).contains(&ttl), "{ttl}");
    // Client flow: acknowledgments from the cookie ISN + 1 on move to the
    // backend's space; its TSecr (the agent's clock) back to the backend's.
    assert_eq!(
        seq,
        affinity_api::SeqAdjustAction {
            seq_delta: 0,
            initial_seq: 0,
            ack_delta: b_isn.wrapping_sub(cookie),
            initial_ack: cookie.wrapping_add(1),
        }
    );
    assert_eq!(
        ts,
        Some(affinity_api::TsAdjustAction {
            delta: b_ts.wrapping_sub(tsval),
            flags: affinity_api::TsAdjustAction::ECHO,
        })
    );
    // Backend flow: sequence numbers from the backend ISN + 1 on move to
    // the cookie's; its TSval onto the agent's clock.
    let (k, _, seq, ts) = pairs[1];
    assert_eq!((k.src_addr, k.src_port, k.dst_port), (BACKEND, 8080, cport));
    assert_eq!(
        seq,
        affinity_api::SeqAdjustAction {
            seq_delta: cookie.wrapping_sub(b_isn),
            initial_seq: b_isn.wrapping_add(1),
            ack_delta: 0,
            initial_ack: 0,
        }
    );
    assert_eq!(
        ts,
        Some(affinity_api::TsAdjustAction {
            delta: tsval.wrapping_sub(b_ts),
            flags: 0,
        })
    );
}

/// A manager's fixed update carrying a spliced flow's adjusts (sequence,
/// segment 12, and timestamp, segment 21: a reply crossing this agent, or
/// this agent restarted) is applied as the splicing agent's own install:
/// acknowledgments and TSecr moved on the client flow, sequence numbers
/// and TSval on the backend flow, checksums valid against a full
/// recompute; a timestamp adjust on a UDP affinity is refused.
#[test]
fn a_fixed_update_with_sequence_and_timestamp_adjusts_is_applied_as_a_splice() {
    use affinity_api::{AffinityIdentifier, AffinityKey, NatAction, Segment};
    use affinity_api::{DenyReason, SeqAdjustAction, TsAdjustAction};
    let (a, mut w) = agent();
    install(&a, None);
    let out = a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 2, &[Wc::from_backends(11)], None),
    );
    assert!(out.replies.is_empty());
    let cport = 40000;
    // As a splice of cookie ISN 0x7000_0000 with backend ISN 0x0000_0100,
    // the agent's TSval clock 5000 against the backend's 2_000_000_000.
    let (cookie, b_isn) = (0x7000_0000u32, 0x0000_0100u32);
    let (ours, theirs) = (5000u32, 2_000_000_000u32);
    let id = |id| Segment::AffinityIdentifier(AffinityIdentifier { id, reason: 0 });
    let fwd_segs = [
        id(1),
        Segment::NatAction(NatAction {
            flags: NatAction::DST_ADDR | NatAction::DST_PORT,
            dst_addr: BACKEND,
            dst_port: 8080,
            ..Default::default()
        }),
        Segment::SeqAdjustAction(SeqAdjustAction {
            ack_delta: b_isn.wrapping_sub(cookie),
            initial_ack: cookie.wrapping_add(1),
            ..Default::default()
        }),
        Segment::TsAdjustAction(TsAdjustAction {
            delta: theirs.wrapping_sub(ours),
            flags: TsAdjustAction::ECHO,
        }),
    ];
    let rev_segs = [
        id(2),
        Segment::NatAction(NatAction {
            flags: NatAction::SRC_ADDR | NatAction::SRC_PORT,
            src_addr: VIP,
            src_port: 80,
            ..Default::default()
        }),
        Segment::SeqAdjustAction(SeqAdjustAction {
            seq_delta: cookie.wrapping_sub(b_isn),
            initial_seq: b_isn.wrapping_add(1),
            ..Default::default()
        }),
        Segment::TsAdjustAction(TsAdjustAction {
            delta: ours.wrapping_sub(theirs),
            flags: 0,
        }),
    ];
    let key = |s: (Ipv4Addr, u16), d: (Ipv4Addr, u16)| AffinityKey {
        protocol: 6,
        src_addr: s.0,
        dst_addr: d.0,
        src_port: s.1,
        dst_port: d.1,
    };
    let fwd = key((CLIENT, cport), (VIP, 80));
    let rev = key((BACKEND, 8080), (CLIENT, cport));
    let msg = common::fixed_msg(
        MGR,
        3,
        &[(fwd, 30, &fwd_segs), (rev, 30, &rev_segs)],
        None,
        None,
    );
    let out = a.handle_control(SEC, from(MGR), &msg);
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    let ts = |val, ecr| TcpOptions {
        timestamps: Some((val, ecr)),
        ..TcpOptions::default()
    };
    // Client → backend: ACK in the cookie's space, TSecr on our clock.
    let req = with_options(
        from_client(
            cport,
            build::TCP_ACK | build::TCP_PSH,
            1001,
            cookie.wrapping_add(51),
            b"GET /",
        ),
        &ts(777, ours + 3),
    );
    let (d, buf) = run(&mut w, SEC, &req);
    assert_eq!(d, Disposition::Pass);
    let out = packet_at(&buf);
    assert!(checksums_ok(&out));
    assert_eq!(seq_ack(&out), (1001, b_isn.wrapping_add(51)));
    assert_eq!(
        options_of(&out).timestamps,
        Some((777, theirs.wrapping_add(3)))
    );
    // Backend → client: sequence in the backend's space, TSval on its
    // clock; the client sees the cookie's space and our clock.
    let reply = with_options(
        build::tcp(
            BACKEND,
            8080,
            CLIENT,
            cport,
            build::TCP_ACK | build::TCP_PSH,
            b_isn.wrapping_add(1),
            1006,
            b"200 OK",
        ),
        &ts(theirs.wrapping_add(9), 777),
    );
    let (d, buf) = run(&mut w, SEC, &reply);
    assert_eq!(d, Disposition::Pass);
    let out = packet_at(&buf);
    assert!(checksums_ok(&out));
    assert_eq!(seq_ack(&out), (cookie.wrapping_add(1), 1006));
    assert_eq!(options_of(&out).timestamps, Some((ours + 9, 777)));
    let info = wire::parse_ipv4(&out).unwrap();
    assert_eq!((info.key.src_addr, info.key.src_port), (VIP, 80));
    assert_eq!(a.counter(Counter::TsAdjustNotTcp), 0);

    // Hostile: a timestamp adjust on a UDP affinity is denied as
    // malformed (naming segment 21), counted, and nothing is installed.
    let udp = AffinityKey {
        protocol: 17,
        ..key((CLIENT, 5353), (VIP, 53))
    };
    let bad = [Segment::TsAdjustAction(TsAdjustAction {
        delta: u32::MAX,
        flags: 0,
    })];
    let before = a.fixed_count(SEC);
    let out = a.handle_control(
        SEC,
        from(MGR),
        &common::fixed_msg(MGR, 4, &[(udp, 30, &bad)], None, None),
    );
    assert_eq!(a.counter(Counter::TsAdjustNotTcp), 1);
    assert_eq!(a.fixed_count(SEC), before);
    assert_eq!(out.replies.len(), 1);
    let deny = ServiceMessage::parse(&out.replies[0].1).unwrap();
    let r = deny.deny_reason().unwrap();
    assert_eq!(
        (r.denied_type, r.code),
        (affinity_api::seg::TS_ADJUST_ACTION, DenyReason::MALFORMED)
    );
}

/// A timestamp adjust (and the sequence adjust beside it, as a splice or
/// a manager's install of a spliced flow puts them) on a packet whose TCP
/// checksum is partial (VPP's checksum offload: the field holds only the
/// pseudo-header sum the NIC completes over the segment): the field is
/// left as it is, so the NIC's checksum is right. Before, the timestamp
/// adjust patched the field as if it held a full checksum and the NIC's
/// came out wrong (the stop-20 trial); with a full checksum it is updated
/// as ever. Both directions: TSval moved, and TSecr (echo).
#[test]
fn a_timestamp_adjust_keeps_a_partial_checksum_partial() {
    use affinity_forwarding_agent::actions::{ActionSet, SeqAdjustKey, TsAdjustKey};
    use wire::checksum;
    let key = affinity_api::AffinityKey {
        protocol: wire::TCP,
        src_addr: CLIENT,
        dst_addr: VIP,
        src_port: 41000,
        dst_port: 80,
    };
    for echo in [false, true] {
        for partial in [false, true] {
            let (a, mut w) = agent();
            let actions = ActionSet {
                seq_adjust: Some(SeqAdjustKey(1000, 0, 0xffff_0000, 0)),
                ts_adjust: Some(TsAdjustKey {
                    delta: 0x0102_0304,
                    echo,
                }),
                ..ActionSet::default()
            };
            a.install_fixed_local(0, key, &actions, 3600).unwrap();
            let ts = TcpOptions {
                timestamps: Some((0x1122_3344, 0x5566_7788)),
                ..TcpOptions::default()
            };
            let sent = with_options(
                from_client(41000, build::TCP_ACK | build::TCP_PSH, 7, 9, b"data"),
                &ts,
            );
            let mut pkt = sent.clone();
            if partial {
                // What the sender's stack leaves for the NIC.
                let len = (pkt.len() - 20) as u32;
                let sum = checksum::sum16(&pkt[12..20]) + u32::from(wire::TCP) + len;
                pkt[36..38].copy_from_slice(&checksum::fold(sum).to_be_bytes());
            }
            let len = pkt.len();
            let mut out = [Disposition::Pass];
            {
                let p = PacketBuf::new(&mut pkt, 0, len);
                let p = if partial {
                    p.with_partial_l4_checksum()
                } else {
                    p
                };
                w.process_batch(SEC, &mut [p], &mut out);
            }
            assert_eq!(out[0], Disposition::Pass);
            let (val, ecr) = options_of(&pkt).timestamps.unwrap();
            let moved = 0x1122_3344u32.wrapping_add(0x0102_0304);
            let echoed = 0x5566_7788u32.wrapping_add(0x0102_0304);
            let want = if echo {
                (0x1122_3344, echoed)
            } else {
                (moved, 0x5566_7788)
            };
            assert_eq!((val, ecr), want, "echo {echo} partial {partial}");
            if partial {
                // Still the pseudo-header sum; then what the NIC does.
                let len = (pkt.len() - 20) as u32;
                let sum = checksum::sum16(&pkt[12..20]) + u32::from(wire::TCP) + len;
                assert_eq!(&pkt[36..38], &checksum::fold(sum).to_be_bytes());
                let c = !checksum::fold(checksum::sum16(&pkt[20..]));
                pkt[36..38].copy_from_slice(&c.to_be_bytes());
            }
            assert!(checksums_ok(&pkt), "echo {echo} partial {partial}");
        }
    }
}
