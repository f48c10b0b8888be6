//! The agent's settings, read once at start: from `startup.conf` (VPP),
//! the host agent's flags, or tests.

use affinity_api::{seg, AuthPolicy};
use std::net::Ipv4Addr;

/// Agent settings (from `startup.conf`, the host agent's flags, or tests).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Fixed affinities (entries; each flow direction is one).
    pub fixed_capacity: usize,
    /// Distinct action sets shared by fixed affinities (entries; the
    /// wildcards get `wildcard_capacity` more).
    pub action_capacity: usize,
    /// Installed wildcards (entries).
    pub wildcard_capacity: usize,
    /// Held packets, all workers together.
    pub hold_limit: usize,
    /// How long a packet is held before it goes to its manager in an
    /// IP-packet-only message (milliseconds).
    pub hold_timeout_ms: u64,
    /// Per worker: first-fragment decisions kept for later fragments.
    pub fragment_cache: usize,
    /// Address and name this agent puts in identity info.
    pub agent_addr: Ipv4Addr,
    pub agent_name: String,
    /// Distinguishes this agent's interest data from others'.
    pub instance_id: u32,
    pub auth: AuthPolicy,
    /// Action segment types treated as unsupported (tests, capability limits).
    pub disabled_actions: Vec<u16>,
    /// Drop (instead of pass) packets whose headers are malformed.
    pub drop_malformed: bool,
    /// Keep per-flow packet/byte counters.
    pub per_flow_counters: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            fixed_capacity: 1 << 20,
            action_capacity: 1 << 18,
            wildcard_capacity: 16384,
            hold_limit: 1024,
            hold_timeout_ms: 1000,
            fragment_cache: 4096,
            agent_addr: Ipv4Addr::UNSPECIFIED,
            agent_name: String::from("affinity-agent"),
            instance_id: 1,
            auth: AuthPolicy::open(),
            disabled_actions: Vec::new(),
            drop_malformed: false,
            per_flow_counters: true,
        }
    }
}

impl AgentConfig {
    /// Whether this agent performs action segment type `t` (10–13): one it
    /// implements ([`SUPPORTED_ACTIONS`]) and the operator has not disabled.
    pub fn supports_action(&self, t: u16) -> bool {
        SUPPORTED_ACTIONS.contains(&t) && !self.disabled_actions.contains(&t)
    }
}

/// Actions this agent implements (segment types, `affinity_api::seg`).
pub const SUPPORTED_ACTIONS: [u16; 5] = [
    seg::NAT_ACTION,
    seg::ADVERTISE_ACTION,
    seg::SEQ_ADJUST_ACTION,
    seg::INTEREST_CRITERIA_ACTION,
    seg::ACTION_LIST,
];
