use affinity_api::{AffinityKey, NatAction};
use affinity_forwarding_agent::actions::{ActionSet, NatActionKey};
use affinity_forwarding_agent::wire::{self, build};
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf};
use std::net::Ipv4Addr;
const SLOT: usize = 192;
const HEAD: usize = 128;
fn key(i: u32) -> AffinityKey {
    AffinityKey {
        protocol: wire::TCP,
        src_addr: Ipv4Addr::from(0xc612_0000u32 + (i >> 8)),
        dst_addr: Ipv4Addr::new(203, 0, 113, 10),
        src_port: 1024 + (i & 0xff) as u16,
        dst_port: 80,
    }
}
fn main() {
    let flows = 1000u32;
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let agent = Agent::new(AgentConfig {
        fixed_capacity: 2 * flows as usize,
        action_capacity: 16,
        ..Default::default()
    });
    let fwd = ActionSet {
        nat: Some(NatActionKey::from(NatAction {
            flags: NatAction::DST_ADDR | NatAction::DST_PORT,
            dst_addr: Ipv4Addr::new(198, 51, 100, 2),
            dst_port: 8080,
            ..Default::default()
        })),
        ..Default::default()
    };
    for i in 0..flows {
        let k = key(i);
        let back = ActionSet {
            nat: Some(NatActionKey::from(NatAction {
                flags: NatAction::DST_ADDR | NatAction::DST_PORT,
                dst_addr: k.dst_addr,
                dst_port: 80,
                ..Default::default()
            })),
            ..Default::default()
        };
        let k2 = AffinityKey {
            dst_addr: Ipv4Addr::new(198, 51, 100, 2),
            dst_port: 8080,
            ..k
        };
        agent.install_fixed_local(0, k, &fwd, 3600).unwrap();
        agent.install_fixed_local(0, k2, &back, 3600).unwrap();
    }
    let mut buf = vec![0u8; 256 * SLOT];
    for i in 0..256 {
        let k = key((i as u32 * 7919) % flows);
        let p = build::tcp(
            k.src_addr,
            k.src_port,
            k.dst_addr,
            k.dst_port,
            build::TCP_ACK,
            1,
            1,
            &[0u8; 24],
        );
        buf[i * SLOT + HEAD..(i + 1) * SLOT].copy_from_slice(&p);
    }
    let mut w = agent.worker();
    let mut out = [Disposition::Pass; 256];
    let t = std::time::Instant::now();
    for _ in 0..batches {
        let mut batch: Vec<PacketBuf<'_>> = buf
            .chunks_mut(SLOT)
            .map(|b| PacketBuf::new(b, HEAD, 64))
            .collect();
        w.process_batch(1, &mut batch, &mut out);
        std::hint::black_box(&out);
    }
    eprintln!(
        "{:.2} ns/pkt {:?}",
        t.elapsed().as_nanos() as f64 / (batches * 256) as f64,
        out[0]
    );
}
