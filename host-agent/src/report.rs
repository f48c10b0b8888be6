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

/// Entries used against capacity.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub used: usize,
    pub capacity: usize,
}

impl From<(usize, usize)> for Usage {
    fn from((used, capacity): (usize, usize)) -> Self {
        Usage { used, capacity }
    }
}

/// One manager's share of the tables (against its quota).
#[derive(Debug, Serialize)]
pub struct OwnerEntry {
    pub manager: Ipv4Addr,
    pub fixed: usize,
    pub wildcards: usize,
}

/// `tables --json`: what the text `tables` shows: occupancy of each table,
/// the wildcard mask patterns against the agent-wide cap, each manager's
/// share, and the warm-up after a start (`None` once warm).
#[derive(Debug, Serialize)]
pub struct TablesReport {
    pub fixed: Usage,
    pub actions: Usage,
    pub wildcards: Usage,
    pub wildcard_patterns: Usage,
    pub managers: Usage,
    pub held: Usage,
    pub per_manager: Vec<OwnerEntry>,
    pub warm_up: Option<WarmUpEntry>,
}

/// The warm-up window still open (see `Agent::start_warm_up`).
#[derive(Debug, Serialize)]
pub struct WarmUpEntry {
    /// Managers whose first wildcard update it still waits for.
    pub waiting_for: Vec<Ipv4Addr>,
    /// Seconds left at most.
    pub left_s: f64,
}

/// `status --json`: all of the above.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub fixed: FixedReport,
    pub wildcard: Vec<WildcardEntry>,
    pub managers: Vec<ManagerEntry>,
    pub tables: TablesReport,
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

/// Table occupancy and the warm-up state at `now` (ns).
pub fn tables(agent: &Agent, now: u64) -> TablesReport {
    let o = agent.occupancy();
    TablesReport {
        fixed: o.fixed.into(),
        actions: o.actions.into(),
        wildcards: o.wildcards.into(),
        wildcard_patterns: (o.wildcard_patterns, o.wildcard_patterns_cap).into(),
        managers: o.managers.into(),
        held: o.held.into(),
        per_manager: o
            .per_owner
            .into_iter()
            .map(|p| OwnerEntry {
                manager: p.manager,
                fixed: p.fixed,
                wildcards: p.wildcards,
            })
            .collect(),
        warm_up: agent
            .warm_up_state(now)
            .map(|(waiting_for, left_ns)| WarmUpEntry {
                waiting_for,
                left_s: left_ns as f64 / 1e9,
            }),
    }
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
/// `fixed [filters]`, `tables`, `wildcard`, `managers` or `stats`, as one JSON
/// document and a newline; `error: ...` for anything else.
pub fn json(agent: &Agent, now: u64, words: &[&str]) -> String {
    let doc = match words.first().copied().unwrap_or("status") {
        "status" => fixed(agent, now, &[]).map(|f| {
            serde_json::to_value(StatusReport {
                fixed: f,
                wildcard: wildcard(agent, now),
                managers: managers(agent, now),
                tables: tables(agent, now),
                stats: stats(agent),
            })
        }),
        "tables" => Ok(serde_json::to_value(tables(agent, now))),
        "fixed" => fixed(agent, now, &words[1..]).map(serde_json::to_value),
        "wildcard" => Ok(serde_json::to_value(wildcard(agent, now))),
        "managers" => Ok(serde_json::to_value(managers(agent, now))),
        "stats" => Ok(serde_json::to_value(stats(agent))),
        other => Err(format!(
            "unknown command {other:?} for --json (status | fixed | tables | wildcard | managers | stats)"
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

#[cfg(test)]
mod tests {
    use super::*;
    use affinity_forwarding_agent::AgentConfig;

    /// `tables --json` and the `tables` part of `status --json` carry what
    /// the text `tables` shows, the pattern cap and the warm-up included
    /// (they were missing from JSON, and `tables --json` was refused).
    #[test]
    fn tables_json_shows_occupancy_the_pattern_cap_and_the_warm_up() {
        let a = Agent::new(AgentConfig {
            fixed_capacity: 1024,
            ..Default::default()
        });
        let mgr = Ipv4Addr::new(192, 0, 2, 10);
        a.start_warm_up(0, 5_000, &[mgr]);
        let v: serde_json::Value =
            serde_json::from_str(&json(&a, 1_000_000_000, &["tables"])).expect("JSON");
        assert_eq!(v["wildcard_patterns"]["used"], 0, "{v}");
        assert_eq!(v["wildcard_patterns"]["capacity"], 12);
        assert_eq!(v["held"]["capacity"], a.config.hold_limit);
        assert_eq!(v["warm_up"]["waiting_for"][0], "192.0.2.10");
        assert_eq!(v["warm_up"]["left_s"], 4.0);
        let s: serde_json::Value =
            serde_json::from_str(&json(&a, 6_000_000_000, &["status"])).expect("JSON");
        assert!(
            s["tables"]["warm_up"].is_null(),
            "warm after the window: {s}"
        );
        assert_eq!(s["tables"]["fixed"]["used"], 0);
    }
}
