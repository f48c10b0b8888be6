//! SYN-flood figures through the forwarding-agent core (no VPP, no
//! network): 10 000 spoofed SYNs (random sources in 198.18.0.0/15, random
//! ports and ISNs) at a VIP, in batches of 256 over one simulated second,
//! against three wildcards: no admission action (the default budgets),
//! a tight admission budget (1000/s, burst 1000), and the SYN proxy. Then
//! 10 000 spoofed ACKs with guessed cookies at the SYN proxy. Prints
//! `name value unit` lines (also appended to target/bench-figures.txt).
//! The lab flood (10 000 SYN/s for 30 s at a VIP with host agents or VPP)
//! is a separate test; these are the core's share of it.

#[path = "../tests/common/mod.rs"]
mod common;

mod figures;

use affinity_api::{interest, AdmissionAction, InterestCriteria};
use affinity_forwarding_agent::wire::build;
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition};
use common::{batch, from, wildcard_msg, Rng, Wc, MGR, SEC, VIP};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

const SYNS: usize = 10_000;
const BATCH: usize = 256;
const HEAD: usize = 256;
const SLOT: usize = HEAD + 64;

/// Clients → VIP:80/tcp, SYNs punted to MGR, with `admission` if given.
fn wildcard(admission: Option<AdmissionAction>) -> Vec<u8> {
    let w = Wc {
        ttl: 3600,
        // No service precedence segment was sent here: the agent's default, 0.
        service: 0,
        interest: Some(InterestCriteria {
            address: Ipv4Addr::UNSPECIFIED,
            port: 0,
            mask: interest::SYN,
            flags: InterestCriteria::DATA,
        }),
        admission,
        ..Wc::to_vip(1)
    };
    wildcard_msg(MGR, 1, &[w], None)
}

fn spoofed(rng: &mut Rng, flags: u8) -> Vec<u8> {
    let r = rng.next();
    let src = Ipv4Addr::from(0xc612_0000u32 | (r as u32 & 0x1_ffff));
    let sport = 1024 + ((r >> 20) as u16 % 60000);
    let (seq, ack) = ((r >> 32) as u32, (r >> 7) as u32);
    build::tcp(src, sport, VIP, 80, flags, seq, ack, &[])
}

struct Outcome {
    punts: u64,
    dropped: u64,
    passed: u64,
    fixed_growth: usize,
    ns_per_pkt: f64,
}

/// Sends `SYNS` spoofed packets with `flags`, spread over one second.
fn flood(agent: &Arc<Agent>, flags: u8, seed: u64) -> Outcome {
    let mut w = agent.worker();
    let mut rng = Rng(seed);
    let before = agent.fixed_count(SEC);
    let mut o = Outcome {
        punts: 0,
        dropped: 0,
        passed: 0,
        fixed_growth: 0,
        ns_per_pkt: 0.0,
    };
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut out = [Disposition::Pass; BATCH];
    let mut elapsed = 0u128;
    let batches = SYNS.div_ceil(BATCH);
    for b in 0..batches {
        let n = BATCH.min(SYNS - b * BATCH);
        let packets: Vec<Vec<u8>> = (0..n).map(|_| spoofed(&mut rng, flags)).collect();
        let mut pkts = batch(&mut bufs, SLOT, HEAD, &packets);
        let now = SEC + (b as u64 * SEC) / batches as u64;
        let t = Instant::now();
        w.process_batch(now, &mut pkts, &mut out[..n]);
        elapsed += t.elapsed().as_nanos();
        for d in &out[..n] {
            match d {
                Disposition::Punt { .. } | Disposition::Consumed(_) => o.punts += 1,
                Disposition::Drop(_) => o.dropped += 1,
                Disposition::Pass | Disposition::Forward(_) => o.passed += 1,
            }
        }
        o.punts += w.take_messages().len() as u64;
    }
    o.fixed_growth = agent.fixed_count(2 * SEC).saturating_sub(before);
    o.ns_per_pkt = elapsed as f64 / SYNS as f64;
    o
}

/// Legitimate clients during a SYN flood at the SYN proxy: rounds of one
/// batch of SYNs (`legit` real clients among spoofed ones) and one batch
/// of the real clients' cookie ACKs (among spoofed ACKs). The real
/// clients' handshakes that reached the manager, and all punts.
fn legit_during_flood(agent: &Arc<Agent>, rounds: usize, legit: usize) -> (u64, u64) {
    let mut w = agent.worker();
    let mut rng = Rng(99);
    let mut proved = 0u64;
    let mut punts = 0u64;
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut out = [Disposition::Pass; BATCH];
    for r in 0..rounds {
        let now = 2 * SEC + r as u64 * SEC / rounds as u64;
        let client = |i: usize| {
            (
                Ipv4Addr::new(198, 19, (r % 250) as u8, i as u8 + 1),
                40000 + r as u16,
            )
        };
        // SYNs: the real clients first, then spoofed.
        let syns: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| {
                if i < legit {
                    let (a, port) = client(i);
                    build::tcp(a, port, VIP, 80, build::TCP_SYN, 7000, 0, &[])
                } else {
                    spoofed(&mut rng, build::TCP_SYN)
                }
            })
            .collect();
        let mut pkts = batch(&mut bufs, SLOT, HEAD, &syns);
        w.process_batch(now, &mut pkts, &mut out);
        // The SYN-ACKs' sequence numbers are the cookies.
        let cookies: Vec<u32> = (0..legit)
            .map(|i| {
                let at = i * SLOT + HEAD + 24;
                u32::from_be_bytes([bufs[at], bufs[at + 1], bufs[at + 2], bufs[at + 3]])
            })
            .collect();
        let acks: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| {
                if i < legit {
                    let (a, port) = client(i);
                    let ack = cookies[i].wrapping_add(1);
                    build::tcp(a, port, VIP, 80, build::TCP_ACK, 7001, ack, &[])
                } else {
                    spoofed(&mut rng, build::TCP_ACK)
                }
            })
            .collect();
        let mut pkts = batch(&mut bufs, SLOT, HEAD, &acks);
        w.process_batch(now, &mut pkts, &mut out);
        for (i, d) in out.iter().enumerate() {
            if matches!(d, Disposition::Punt { .. } | Disposition::Consumed(_)) {
                punts += 1;
                proved += (i < legit) as u64;
            }
        }
        punts += w.take_messages().len() as u64;
    }
    (proved, punts)
}

fn agent(admission: Option<AdmissionAction>) -> Arc<Agent> {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 1 << 16,
        ..AgentConfig::default()
    });
    let _ = a.handle_control(0, from(MGR), &wildcard(admission));
    a
}

fn main() {
    let mut figures: Vec<(String, f64, &str)> = Vec::new();
    let mut record = |name: &str, o: &Outcome| {
        figures.push((format!("{name}_punts"), o.punts as f64, "msgs"));
        figures.push((format!("{name}_dropped"), o.dropped as f64, "pkts"));
        figures.push((format!("{name}_answered"), o.passed as f64, "pkts"));
        figures.push((
            format!("{name}_fixed_growth"),
            o.fixed_growth as f64,
            "entries",
        ));
        figures.push((format!("{name}_ns_per_pkt"), o.ns_per_pkt, "ns"));
    };
    let syn = build::TCP_SYN;
    record("flood_10k_syn_default_budget", &flood(&agent(None), syn, 1));
    let tight = AdmissionAction {
        new_rate: 1000,
        new_burst: 1000,
        ..AdmissionAction::default()
    };
    record(
        "flood_10k_syn_budget_1000",
        &flood(&agent(Some(tight)), syn, 2),
    );
    let proxy = AdmissionAction {
        flags: AdmissionAction::SYN_PROXY,
        ..AdmissionAction::default()
    };
    let a = agent(Some(proxy));
    record("flood_10k_syn_synproxy", &flood(&a, syn, 3));
    record("flood_10k_ack_synproxy", &flood(&a, build::TCP_ACK, 4));
    figures.push((
        "flood_synproxy_syn_acks_sent".into(),
        a.counter(Counter::SynProxyAnswered) as f64,
        "pkts",
    ));
    // 40 rounds × 25 real clients among 231 spoofed SYNs and ACKs.
    let (proved, punts) = legit_during_flood(&a, 40, 25);
    figures.push((
        "flood_synproxy_legit_handshakes_proved".into(),
        proved as f64,
        "handshakes",
    ));
    figures.push((
        "flood_synproxy_legit_success".into(),
        proved as f64 / 10.0,
        "percent",
    ));
    figures.push((
        "flood_synproxy_legit_round_punts".into(),
        punts as f64,
        "msgs",
    ));
    figures.push((
        "flood_synproxy_bad_cookies".into(),
        a.counter(Counter::SynProxyBadCookie) as f64,
        "pkts",
    ));

    figures::report(figures, 2);
}
