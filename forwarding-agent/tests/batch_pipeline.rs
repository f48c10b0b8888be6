//! The batch loop decides a batch as it decides the same packets one at a
//! time (batches of 1, 17, 256 and 600 packets: more than a group, the ring
//! of two groups and a chunk), including fragments whose first and later
//! pieces share a batch in either order, punts, and fast-path hits (written
//! in the stop-21 trial of the ring pipeline).

mod common;
use affinity_forwarding_agent::wire::build;
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf, Worker};
use common::{data, flow_msg, from, reply, syn, wildcard_msg, Wc, CLIENT, MGR, SEC, VIP};
use std::net::Ipv4Addr;

fn agent() -> (std::sync::Arc<Agent>, Worker) {
    let a = Agent::new(AgentConfig {
        fixed_capacity: 4096,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        agent_name: "fa1".into(),
        ..Default::default()
    });
    a.handle_control(
        0,
        from(MGR),
        &wildcard_msg(MGR, 1, &[Wc::to_vip(10), Wc::from_backends(11)], None),
    );
    for port in 1..=200u16 {
        a.handle_control(
            0,
            from(MGR),
            &flow_msg(MGR, u64::from(port) + 1, 40000 + port, 3000, None, None),
        );
    }
    let w = a.worker();
    (a, w)
}

fn packets() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut x = 0x1234_5678_9abc_def0u64;
    for i in 0..600u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 40001 + (x % 220) as u16; // some ports have no flow
        match x % 7 {
            0 => v.push(syn(port)),
            1 => v.push(reply(port, build::TCP_ACK)),
            2 | 3 => v.push(data(port, build::TCP_ACK)),
            4 => {
                // first then later fragment, adjacent
                let whole = build::tcp(CLIENT, port, VIP, 80, build::TCP_ACK, i, 1, &[7u8; 64]);
                let mut f = build::fragment(&whole, 0, 40, true);
                let mut l = build::fragment(&whole, 40, 44, false);
                set_id(&mut f, i as u16);
                set_id(&mut l, i as u16);
                v.push(f);
                v.push(l);
            }
            5 => {
                // later then first fragment
                let whole = build::tcp(CLIENT, port, VIP, 80, build::TCP_ACK, i, 1, &[9u8; 64]);
                let mut f = build::fragment(&whole, 0, 40, true);
                let mut l = build::fragment(&whole, 40, 44, false);
                set_id(&mut f, 0x8000 | i as u16);
                set_id(&mut l, 0x8000 | i as u16);
                v.push(l);
                v.push(f);
            }
            _ => v.push(data(port, build::TCP_ACK | build::TCP_PSH)),
        }
    }
    v
}

fn set_id(p: &mut [u8], id: u16) {
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = affinity_forwarding_agent::wire::checksum::ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

const HEAD: usize = 256;
const SLOT: usize = 512;

/// (Punt bytes are not compared: the message sequence starts from the
/// wall-clock second the agent is made, so two runs may differ by one.)
/// Runs `pkts` in batches of `size`: each packet's disposition (a punt's
/// start relative to the packet's), its bytes after, and the released
/// fragments and messages.
fn run(size: usize) -> (Vec<String>, Vec<Vec<u8>>, usize, usize) {
    let (_a, mut w) = agent();
    let pkts = packets();
    let mut bufs = vec![0u8; SLOT * pkts.len()];
    for (i, p) in pkts.iter().enumerate() {
        bufs[i * SLOT + HEAD..i * SLOT + HEAD + p.len()].copy_from_slice(p);
    }
    let mut disp = Vec::new();
    let mut lens = Vec::new();
    let (mut released, mut msgs) = (0, 0);
    for (c, chunk) in bufs.chunks_mut(SLOT * size).enumerate() {
        let first = c * size;
        let mut pb: Vec<PacketBuf<'_>> = chunk
            .chunks_mut(SLOT)
            .enumerate()
            .map(|(j, s)| PacketBuf::new(s, HEAD, pkts[first + j].len()))
            .collect();
        let mut out = vec![Disposition::Pass; pb.len()];
        w.process_batch(SEC, &mut pb, &mut out);
        for (p, d) in pb.iter().zip(out.iter()) {
            lens.push(p.len);
            disp.push(match d {
                Disposition::Punt { to, start } => {
                    format!("Punt {to} {}", *start as isize - HEAD as isize)
                }
                d => format!("{d:?}"),
            });
        }
        released += w.take_released().len();
        msgs += w.take_messages().len();
    }
    let mut outb = Vec::new();
    for (i, l) in lens.iter().enumerate() {
        outb.push(bufs[i * SLOT..i * SLOT + HEAD + l].to_vec());
    }
    (disp, outb, released, msgs)
}

#[test]
fn batches_decide_as_single_packets() {
    let one = run(1);
    let mut h = std::collections::BTreeMap::new();
    for d in &one.0 {
        *h.entry(
            d.split(' ')
                .next()
                .unwrap_or("")
                .split('(')
                .next()
                .unwrap_or("")
                .to_string()
                + d.split('(').nth(1).unwrap_or(""),
        )
        .or_insert(0) += 1;
    }
    eprintln!("dispositions: {h:?}, released {} messages {}", one.2, one.3);
    let mut bad = Vec::new();
    for size in [17, 256, 600] {
        let b = run(size);
        for i in 0..one.0.len() {
            if one.0[i] != b.0[i] {
                bad.push(format!(
                    "size {size} packet {i}: alone {} batched {}",
                    one.0[i], b.0[i]
                ));
            } else if !one.0[i].starts_with("Punt") && one.1[i] != b.1[i] {
                bad.push(format!(
                    "size {size} packet {i} ({}): bytes differ",
                    one.0[i]
                ));
            }
        }
        if (one.2, one.3) != (b.2, b.3) {
            bad.push(format!(
                "size {size}: released/messages alone {:?} batched {:?}",
                (one.2, one.3),
                (b.2, b.3)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} differences:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );
}
