//! `--json` answers of the status socket and the metrics endpoint: the
//! agent's tables, managers and counters as data, read through the
//! forwarding-agent core's introspection (the same figures the text of
//! `affinity_forwarding_agent::show` prints). Addresses are `A.B.C.D`
//! strings; times are seconds.

use affinity_api::NatAction;
use affinity_forwarding_agent::introspection::{FixedRow, WildcardRow};
use affinity_forwarding_agent::Agent;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// `fixed --json`: how many fixed affinities, of how many, and the rows
/// shown (at most the `limit` filter, default as the text form).
#[derive(Debug, Serialize)]
pub struct FixedReport {
    pub count: usize,
    pub capacity: usize,
    pub rows: Vec<FixedEntry>,
}

/// One fixed affinity.
#[derive(Debug, Serialize)]
pub struct FixedEntry {
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    /// The NAT rewrite (only the fields it replaces), if any.
    pub nat: Option<NatEntry>,
    /// The owning manager's address.
    pub owner: Ipv4Addr,
    /// Seconds until it expires (tenths kept).
    pub expires_in_s: f64,
    pub packets: u64,
    pub bytes: u64,
    /// A TCP segment with ACK and neither SYN nor RST hit it since it was
    /// added or since the last SYN on it (the activity reports' mark).
    pub handshake_complete: bool,
}

/// The fields a NAT action replaces.
#[derive(Debug, Serialize)]
pub struct NatEntry {
    pub src: Option<Ipv4Addr>,
    pub src_port: Option<u16>,
    pub dst: Option<Ipv4Addr>,
    pub dst_port: Option<u16>,
}

/// One wildcard affinity.
#[derive(Debug, Serialize)]
pub struct WildcardEntry {
    pub owner: Ipv4Addr,
    pub id: u32,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub src_mask: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_mask: Ipv4Addr,
    pub dst_port: u16,
    pub search_first: bool,
    pub service_precedence: u16,
    pub backup_precedence: u16,
    pub expires_in_s: f64,
}

/// One manager the agent has heard from.
#[derive(Debug, Serialize)]
pub struct ManagerEntry {
    pub address: Ipv4Addr,
    pub name: String,
    pub last_heard_s: f64,
    pub messages: u64,
}

/// Per forward address statistics (fixed affinities with STATISTICS).
#[derive(Debug, Serialize)]
pub struct ForwardEntry {
    pub forward: Ipv4Addr,
    pub packets: u64,
    pub bytes: u64,
}

/// `stats --json`: every counter (zeros too) and the forward statistics.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub counters: BTreeMap<&'static str, u64>,
    pub forward: Vec<ForwardEntry>,
}

/// `status --json`: all of the above.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub fixed: FixedReport,
    pub wildcard: Vec<WildcardEntry>,
    pub managers: Vec<ManagerEntry>,
    pub stats: StatsReport,
}

fn nat(n: NatAction) -> NatEntry {
    let has = |bit: u8| n.flags & bit != 0;
    NatEntry {
        src: has(NatAction::SRC_ADDR).then_some(n.src_addr),
        src_port: has(NatAction::SRC_PORT).then_some(n.src_port),
        dst: has(NatAction::DST_ADDR).then_some(n.dst_addr),
        dst_port: has(NatAction::DST_PORT).then_some(n.dst_port),
    }
}

fn fixed_entry(r: &FixedRow) -> FixedEntry {
    let k = r.key;
    FixedEntry {
        protocol: k.protocol,
        src: k.src_addr,
        src_port: k.src_port,
        dst: k.dst_addr,
        dst_port: k.dst_port,
        nat: r.actions.nat.map(|n| nat(n.into())),
        owner: r.owner,
        expires_in_s: r.expires_in_ds as f64 / 10.0,
        packets: r.packets,
        bytes: r.bytes,
        handshake_complete: r.handshake_complete,
    }
}

fn wildcard_entry(r: &WildcardRow) -> WildcardEntry {
    let k = r.key;
    WildcardEntry {
        owner: r.owner,
        id: r.id,
        protocol: k.protocol,
        src: k.src_addr,
        src_mask: r.src_mask,
        src_port: k.src_port,
        dst: k.dst_addr,
        dst_mask: r.dst_mask,
        dst_port: k.dst_port,
        search_first: r.search_first,
        service_precedence: r.service_precedence,
        backup_precedence: r.backup_precedence,
        expires_in_s: r.expires_in_ds as f64 / 10.0,
    }
}

/// Fixed affinities matching `filters` (the words of `fixed`: `proto P`,
/// `src A`, `dst A`, `limit N`); the error names a bad word.
pub fn fixed(agent: &Agent, now: u64, filters: &[&str]) -> Result<FixedReport, String> {
    let (filter, limit, _verbose) = affinity_forwarding_agent::show::fixed_filter(filters)?;
    Ok(FixedReport {
        count: agent.fixed_count(now),
        capacity: agent.fixed_capacity(),
        rows: agent
            .fixed_entries(now, limit, filter)
            .iter()
            .map(fixed_entry)
            .collect(),
    })
}

/// Every wildcard affinity.
pub fn wildcard(agent: &Agent, now: u64) -> Vec<WildcardEntry> {
    agent
        .wildcard_entries(now)
        .iter()
        .map(wildcard_entry)
        .collect()
}

/// Every manager heard from, with seconds since last heard at `now` (ns).
pub fn managers(agent: &Agent, now: u64) -> Vec<ManagerEntry> {
    agent
        .managers()
        .into_iter()
        .map(|m| ManagerEntry {
            address: m.address,
            name: m.name,
            last_heard_s: now.saturating_sub(m.last_heard_ns) as f64 / 1e9,
            messages: m.messages,
        })
        .collect()
}

/// Every counter and the forward statistics.
pub fn stats(agent: &Agent) -> StatsReport {
    StatsReport {
        counters: agent.counters().into_iter().collect(),
        forward: agent
            .forward_stats()
            .into_iter()
            .map(|(a, s)| ForwardEntry {
                forward: a,
                packets: s.packets,
                bytes: s.bytes,
            })
            .collect(),
    }
}

/// The answer to a status-socket line ending in `--json`: `status`,
/// `fixed [filters]`, `wildcard`, `managers` or `stats`, as one JSON
/// document and a newline; `error: ...` for anything else.
pub fn json(agent: &Agent, now: u64, words: &[&str]) -> String {
    let doc = match words.first().copied().unwrap_or("status") {
        "status" => fixed(agent, now, &[]).map(|f| {
            serde_json::to_value(StatusReport {
                fixed: f,
                wildcard: wildcard(agent, now),
                managers: managers(agent, now),
                stats: stats(agent),
            })
        }),
        "fixed" => fixed(agent, now, &words[1..]).map(serde_json::to_value),
        "wildcard" => Ok(serde_json::to_value(wildcard(agent, now))),
        "managers" => Ok(serde_json::to_value(managers(agent, now))),
        "stats" => Ok(serde_json::to_value(stats(agent))),
        other => Err(format!(
            "unknown command {other:?} for --json (status | fixed | wildcard | managers | stats)"
        )),
    };
    match doc {
        Ok(Ok(v)) => {
            serde_json::to_string_pretty(&v).map_or_else(|e| format!("error: {e}\n"), |s| s + "\n")
        }
        Ok(Err(e)) => format!("error: {e}\n"),
        Err(e) => format!("error: {e}\n"),
    }
}
