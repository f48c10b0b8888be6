//! The manager and agents that cannot perform what a service needs (issue
//! 13, item 1): the manager lists the actions it needs, does not send a
//! service to an agent that cannot perform them, and says why in `status`;
//! and a manager without keys accepts signed messages (item 2). Agent
//! 192.0.2.1, manager 192.0.2.10, VIP 203.0.113.10, client 198.18.0.5.

use affinity_api::{seg, AuthAlgorithm, AuthPolicy, Key, MessageType, ServiceMessage, AGENT_PORT};
use affinity_forwarding_agent::wire::build;
use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf};
use affinity_manager::{Config, ManagerCore};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

mod common;
use common::{manager_section, service};

const SEC: u64 = 1_000_000_000;
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);

fn config() -> Config {
    let options = [
        r#"protocol = "tcp""#,
        r#"client_domain = "198.18.0.0/15""#,
        r#"algorithm = "maglev""#,
    ];
    Config::parse(&format!(
        "{}\n[agents]\nunicast = [\"192.0.2.1:1637\"]\n{}",
        manager_section(""),
        service("web", "203.0.113.10:80", &options, &["198.51.100.2:8080"])
    ))
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn agent_addr() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), AGENT_PORT)
}

fn nat_less_agent(auth: AuthPolicy) -> Arc<Agent> {
    Agent::new(AgentConfig {
        fixed_capacity: 1024,
        agent_addr: *agent_addr().ip(),
        agent_name: "fa1".into(),
        disabled_actions: vec![seg::NAT_ACTION],
        auth,
        ..Default::default()
    })
}

/// Live wildcard updates (TTL > 0) among `out` to the agent.
fn wildcards_to_agent(out: &[(SocketAddrV4, Vec<u8>)]) -> usize {
    out.iter()
        .filter(|(to, m)| {
            *to == agent_addr()
                && ServiceMessage::parse(m)
                    .is_ok_and(|m| m.msg_type() == MessageType::AffinityUpdateWildcard)
        })
        .count()
}

#[test]
fn agent_without_nat_in_its_hello_gets_no_service_and_status_says_why() {
    let mut mgr = ManagerCore::new(config(), 0);
    let agent = nat_less_agent(AuthPolicy::open());
    mgr.handle_datagram(0, agent_addr(), &agent.build_hello());
    let out = mgr.tick(0);
    assert_eq!(wildcards_to_agent(&out), 0, "the service is withheld");
    let status = mgr.status(0);
    assert!(
        status.contains("agent 192.0.2.1:1637 not used for service web: cannot perform nat"),
        "{status}"
    );
}

#[test]
fn agent_that_denies_nat_is_not_used_for_the_service() {
    let mut mgr = ManagerCore::new(config(), 0);
    let mgr_addr = mgr.config().manager.listen;
    let agent = nat_less_agent(AuthPolicy::open());
    let mut w = agent.worker();
    // No hello: the wildcard's action list names NAT as required, so the
    // agent denies it and installs nothing.
    let out = mgr.tick(0);
    assert!(wildcards_to_agent(&out) > 0);
    for (to, m) in out.iter().filter(|(to, _)| *to == agent_addr()) {
        let co = agent.handle_control(0, mgr_addr, m);
        for (_, deny) in co.replies {
            mgr.handle_datagram(0, *to, &deny);
        }
    }
    assert_eq!(agent.wildcard_entries(0).len(), 0);
    // One deny per wildcard (forward and the backend's reverse).
    assert_eq!(mgr.counters.get("deny-unsupported-action"), Some(&2));
    let status = mgr.status(0);
    assert!(
        status.contains("not used for service web: cannot perform nat"),
        "{status}"
    );
    // A SYN to the VIP is not punted (no wildcard), so no flow is placed
    // through the agent; the next refresh leaves it out.
    let syn = build::tcp(CLIENT, 40000, VIP, 80, build::TCP_SYN, 1, 0, &[]);
    let mut buf = vec![0u8; 256 + syn.len()];
    buf[256..].copy_from_slice(&syn);
    let mut out = [Disposition::Pass];
    w.process_batch(
        SEC,
        &mut [PacketBuf::new(&mut buf, 256, syn.len())],
        &mut out,
    );
    assert!(!matches!(out[0], Disposition::Punt { .. }));
    assert_eq!(mgr.flow_count(), 0);
    assert_eq!(wildcards_to_agent(&mgr.tick(10 * SEC)), 0);
}

#[test]
fn manager_without_keys_accepts_signed_messages() {
    let mut mgr = ManagerCore::new(config(), 0);
    let key = Key::new(1, AuthAlgorithm::HmacSha256, b"k".to_vec());
    let agent = nat_less_agent(AuthPolicy::with_key(key));
    mgr.handle_datagram(0, agent_addr(), &agent.build_hello());
    assert_eq!(mgr.counters.get("rx-auth-failed"), None);
    assert_eq!(mgr.counters.get("rx-hello"), Some(&1));
}
