#![no_main]
//! The agent's control path as the host agent runs it: a burst of
//! datagrams (the input split on 0xFFFF 0xFFFF markers, each preceded by a
//! source byte) through `handle_control_batch`, once keyed (with an
//! allow-list and small quotas) and once open, then the timers. Nothing may
//! panic, replies stay no larger than allowed, and the manager table stays
//! within its bound. Seeds: fuzz/seeds/agent_control.
use affinity_api::{AuthAlgorithm, AuthPolicy, Key};
use affinity_forwarding_agent::{Agent, AgentConfig, OwnerQuota};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

fn split(data: &[u8]) -> Vec<(SocketAddrV4, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&src, tail)) = rest.split_first() {
        let end = tail
            .windows(4)
            .position(|w| w == [0xff, 0xff, 0xff, 0xff])
            .unwrap_or(tail.len());
        let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 8 + (src & 3)), 1638);
        out.push((from, &tail[..end]));
        rest = tail.get(end + 4..).unwrap_or(&[]);
        if out.len() >= 16 {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let burst = split(data);
    let small = |auth: AuthPolicy, allowed: Option<Vec<Ipv4Addr>>| AgentConfig {
        fixed_capacity: 64,
        action_capacity: 64,
        wildcard_capacity: 16,
        agent_addr: Ipv4Addr::new(192, 0, 2, 1),
        auth,
        allowed_managers: allowed,
        max_managers: 2,
        owner_quota: OwnerQuota {
            fixed: 8,
            wildcards: 8,
            wildcard_patterns: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let key = Key::new(1, AuthAlgorithm::HmacSha256, b"k".to_vec());
    for cfg in [
        small(AuthPolicy::with_key(key), Some(vec![Ipv4Addr::new(192, 0, 2, 10)])),
        small(AuthPolicy::open(), None),
    ] {
        let agent = Agent::new(cfg);
        let out = agent.handle_control_batch(1, burst.iter().copied());
        for (_, m) in &out.replies {
            assert!(m.len() <= 65_535);
        }
        let _ = agent.tick(100_000_000_000);
        assert!(agent.managers().len() <= 2);
        let _ = affinity_forwarding_agent::show::render(&agent, 0, "status");
    }
});
