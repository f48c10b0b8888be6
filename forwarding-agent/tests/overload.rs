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

#[test]
fn syn_proxy_keeps_the_clients_first_data_from_the_backend_until_the_splice() {
    let cport = 40000;
    let (a, mut w, ack, cookie, tsval) = proved(cport);
    // The client's request right behind its ACK, with the same valid
    // cookie: it proves the connection too (as with SYNPROXY: were the ACK
    // lost, it would be all that comes), so both reach the manager before
    // its first answer is back.
    let opts = TcpOptions {
        timestamps: Some((12346, tsval)),
        ..TcpOptions::default()
    };
    let flags = build::TCP_ACK | build::TCP_PSH;
    let req = with_options(
        build::tcp(
            CLIENT,
            cport,
            VIP,
            80,
            flags,
            1001,
            cookie.wrapping_add(1),
            b"GET / HTTP/1.0\r\n\r\n",
        ),
        &opts,
    );
    let mut echoes = Vec::new();
    for p in [&ack, &req] {
        let (d, buf) = run(&mut w, SEC, p);
        let Disposition::Punt { start, .. } = d else {
            panic!("{d:?}")
        };
        let msg = ServiceMessage::parse(&buf[start..]).unwrap();
        echoes.push(msg.fa_interest_data().unwrap().to_vec());
    }
    assert_eq!(a.counter(Counter::SynProxyProved), 2);
    // The answer to the ACK: kept, the backend SYN goes out.
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 3, cport, 30, Some(&echoes[0]), Some(&ack)),
    );
    assert_eq!(out.returned.len(), 1, "the backend SYN");
    // The answer to the request: the connection is pending, its SYN out;
    // no second SYN, the request is dropped (the client sends it again).
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 4, cport, 30, Some(&echoes[1]), Some(&req)),
    );
    assert!(out.returned.is_empty(), "{:?}", out.returned.len());
    assert_eq!(a.counter(Counter::SynProxyBackendSyn), 1);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 1);
    // Its retransmission on the fixed affinity, the backend not yet
    // answered: it would reach the backend with an acknowledgment in the
    // cookie's space and draw a reset. Dropped too.
    assert_eq!(
        run(&mut w, SEC, &req).0,
        Disposition::Drop(Counter::SynProxyEarlyData)
    );
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 2);
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
    assert_eq!(run(&mut w, SEC, &synack).0, Disposition::Pass);
    assert_eq!(a.counter(Counter::SynProxySpliced), 1);
    // Spliced: the request goes to the backend, acknowledging its ISN.
    let (d, buf) = run(&mut w, SEC, &req);
    assert_eq!(d, Disposition::Pass);
    let out_req = &buf[HEADROOM..HEADROOM + req.len()];
    assert!(checksums_ok(out_req));
    let info = wire::parse_ipv4(out_req).unwrap();
    assert_eq!((info.key.dst_addr, info.key.dst_port), (BACKEND, 8080));
    assert_eq!(seq_ack(out_req), (1001, 0x1234_5679));
    // A late answer to a second proof, after the splice: the packet goes
    // on as returned, through the adjusted flow; no new SYN.
    let out = a.handle_control(
        SEC,
        from(MGR),
        &flow_msg(MGR, 5, cport, 30, Some(&echoes[1]), Some(&req)),
    );
    assert_eq!(out.returned.len(), 1);
    assert_eq!(out.returned[0].packet, req);
    assert_eq!(a.counter(Counter::SynProxyBackendSyn), 1);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 2);
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
        Disposition::Drop(Counter::SynProxyEarlyData)
    );
    // Never spliced: forgotten after the pending time (10 s).
    let later = SEC + affinity_forwarding_agent::synproxy::PENDING_NS + 1;
    assert_eq!(run(&mut w, later, &req).0, Disposition::Pass);
    assert_eq!(a.counter(Counter::SynProxyEarlyData), 1);
}
