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
    /// Source addresses control messages are accepted from; `None` = any
    /// (open to the whole control LAN: trusted LANs only). Checked before
    /// anything else, so other senders leave no state.
    pub allowed_managers: Option<Vec<Ipv4Addr>>,
    /// Managers (owners) remembered at most; a new sender past it is
    /// dropped and counted (`control-manager-table-full`). Bounds the state
    /// senders can create.
    pub max_managers: usize,
    /// Multicast groups this agent receives wildcard updates on: besides
    /// `agent_addr`, the addresses a receiver segment may name.
    pub multicast_groups: Vec<Ipv4Addr>,
    /// Per-owner limits (entries) on the fixed and wildcard tables and on
    /// wildcard mask patterns; past one an update is denied with
    /// `QUOTA_EXCEEDED`. The action table needs no limit of its own: each
    /// fixed or wildcard entry holds one action reference and action sets
    /// carry their owner (never shared between owners), so an owner's
    /// action sets are at most its fixed plus wildcard entries. Default:
    /// entries limited only by the tables, 8 patterns.
    pub owner_quota: OwnerQuota,
    /// Distinct wildcard mask patterns (source mask, destination mask,
    /// which of protocol/ports are "any") among all managers' wildcards
    /// together. Each is one more hash probe for every packet that misses
    /// the fixed table, so this bounds per-packet work whatever the
    /// wildcard set and however many managers add up their per-owner
    /// quotas (issue 16, item 4); a wildcard that would add one more is
    /// denied with `QUOTA_EXCEEDED` (code 7) and counted
    /// (`wildcard-patterns-full`), installed ones stay. Default
    /// [`DEFAULT_MAX_WILDCARD_PATTERNS`].
    pub max_wildcard_patterns: usize,
    /// How often each manager gets an activity report of its fixed
    /// affinities that carried packets (milliseconds; 0 = never, the
    /// default here: the host agent and the VPP plugin set 10 000). Needs
    /// `per_flow_counters`. A manager ends flows as idle only on agents
    /// that report. See `crate::activity`.
    pub activity_report_interval_ms: u64,
}

/// Default [`AgentConfig::max_wildcard_patterns`]: 12 distinct mask
/// patterns for the whole agent. A manager's services need 2-4 (forward,
/// reverse, source-NAT reverse), a primary and its backup send the same
/// ones, and managers splitting clients by domain differ only in the
/// domain's mask: room for three or four managers with disjoint sets.
/// Measured in `benches/datapath.rs` (`patterns_*`): a packet that misses
/// the fixed table and probes every group costs about 2.4 ns more per
/// group; 10 000 wildcards offered with 10 000 patterns by 8 managers
/// leave 12 groups, about 1.6-1.8x the cost with one pattern (16 groups
/// measured 1.7-2.0x; uncapped, 10 000 patterns cost about 1 450x).
pub const DEFAULT_MAX_WILDCARD_PATTERNS: usize = 12;

/// Per-owner (per-manager) entry limits; see [`AgentConfig::owner_quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerQuota {
    /// Fixed affinities one manager may hold (entries).
    pub fixed: usize,
    /// Wildcards one manager may hold (entries).
    pub wildcards: usize,
    /// Distinct (source mask, destination mask, port-any) patterns among
    /// one manager's wildcards: each costs the data path one more hash
    /// probe per non-fixed packet, so this bounds per-packet work (issue
    /// 16, item 4). Default 8: measured 1.9x the cost of one pattern
    /// (`tests/control_security.rs`, `patterns_cost`); a manager's
    /// services usually need 2-4 (forward, reverse, source-NAT reverse).
    pub wildcard_patterns: usize,
}

impl Default for OwnerQuota {
    fn default() -> Self {
        OwnerQuota {
            fixed: usize::MAX,
            wildcards: usize::MAX,
            wildcard_patterns: 8,
        }
    }
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
            allowed_managers: None,
            max_managers: 64,
            multicast_groups: Vec::new(),
            owner_quota: OwnerQuota::default(),
            max_wildcard_patterns: DEFAULT_MAX_WILDCARD_PATTERNS,
            activity_report_interval_ms: 0,
        }
    }
}

impl AgentConfig {
    /// Whether this agent performs action segment type `t` (10–13, 20): one it
    /// implements ([`SUPPORTED_ACTIONS`]) and the operator has not disabled.
    pub fn supports_action(&self, t: u16) -> bool {
        SUPPORTED_ACTIONS.contains(&t) && !self.disabled_actions.contains(&t)
    }
}

/// Actions this agent implements (segment types, `affinity_api::seg`),
/// announced as bits of its hello's capabilities (PROTOCOL.md, segment 17):
/// the seed's four actions and action list (10-14), and the admission
/// action (20: punt budgets and the SYN proxy, `datapath::admission`).
pub const SUPPORTED_ACTIONS: [u16; 6] = [
    seg::NAT_ACTION,
    seg::ADVERTISE_ACTION,
    seg::SEQ_ADJUST_ACTION,
    seg::INTEREST_CRITERIA_ACTION,
    seg::ACTION_LIST,
    seg::ADMISSION_ACTION,
];

/// Largest key file read (bytes): `/dev/zero` must not be read until
/// memory runs out, and a key longer than a hash block adds nothing. The
/// host agent's `--key-file` and the VPP plugin's `auth-key-file` share it.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key file gave no key ([`read_key_file`]).
#[derive(Debug)]
pub enum KeyFileError {
    /// Could not be opened or read.
    Io(std::io::Error),
    /// Nothing but (at most) a newline: an empty key would authenticate
    /// anyone who knows the algorithm.
    Empty,
    /// Longer than [`MAX_KEY_FILE_BYTES`].
    TooLong,
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFileError::Io(e) => write!(f, "{e}"),
            KeyFileError::Empty => write!(f, "empty key"),
            KeyFileError::TooLong => {
                write!(f, "key file longer than {MAX_KEY_FILE_BYTES} bytes")
            }
        }
    }
}

/// Reads a key file: at most [`MAX_KEY_FILE_BYTES`] bytes, one trailing
/// newline dropped; an unreadable, empty or longer file is an error.
pub fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, KeyFileError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(KeyFileError::Io)?;
    let mut secret = Vec::new();
    f.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut secret)
        .map_err(KeyFileError::Io)?;
    if secret.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLong);
    }
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(KeyFileError::Empty);
    }
    Ok(secret)
}
