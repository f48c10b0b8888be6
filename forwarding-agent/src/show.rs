//! The text of `show affinity ...` (vppctl) and `affinity-agent status`:
//! one renderer, so both print the same tables.

use crate::wire::IpProtocol;
use crate::Agent;
use affinity_api::{AffinityKey, NatAction};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

fn proto(p: u8) -> String {
    match IpProtocol::from(p) {
        // 0 in a wildcard key: any protocol.
        IpProtocol::Unknown(0) => "any".into(),
        known => known.name().map_or_else(|| p.to_string(), String::from),
    }
}

fn secs(ds: i64) -> String {
    format!("{:.1}s", ds as f64 / 10.0)
}

fn nat_text(n: NatAction) -> String {
    let mut s = String::from("nat");
    if n.flags & NatAction::SRC_ADDR != 0 {
        let _ = write!(s, " src {}", n.src_addr);
    }
    if n.flags & NatAction::SRC_PORT != 0 {
        let _ = write!(s, " sport {}", n.src_port);
    }
    if n.flags & NatAction::DST_ADDR != 0 {
        let _ = write!(s, " dst {}", n.dst_addr);
    }
    if n.flags & NatAction::DST_PORT != 0 {
        let _ = write!(s, " dport {}", n.dst_port);
    }
    s
}

/// A predicate over fixed affinities' keys (from [`fixed_filter`]).
pub type KeyFilter = Box<dyn Fn(&AffinityKey) -> bool>;

/// Filters of `show affinity fixed`: `proto P`, `src A`, `dst A`, `limit N`,
/// `verbose`: the key filter, the row limit and whether `verbose` was
/// given; the error names the bad word. (Also read by the host agent's
/// `fixed --json`.)
pub fn fixed_filter(words: &[&str]) -> Result<(KeyFilter, usize, bool), String> {
    let (mut proto, mut src, mut dst, mut limit, mut verbose) = (
        None::<u8>,
        None::<Ipv4Addr>,
        None::<Ipv4Addr>,
        100usize,
        false,
    );
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let mut arg = || it.next().copied().ok_or(format!("{w} needs a value"));
        match *w {
            "proto" => {
                let name = arg()?;
                proto = Some(match IpProtocol::from_name(name) {
                    Some(p) => p.number(),
                    None => name.parse().map_err(|_| format!("bad protocol {name:?}"))?,
                })
            }
            "src" => src = Some(arg()?.parse().map_err(|_| "bad src address")?),
            "dst" => dst = Some(arg()?.parse().map_err(|_| "bad dst address")?),
            "limit" => limit = arg()?.parse().map_err(|_| "bad limit")?,
            "verbose" => verbose = true,
            other => return Err(format!("unknown filter {other:?}")),
        }
    }
    let f = move |k: &AffinityKey| {
        proto.is_none_or(|p| p == k.protocol)
            && src.is_none_or(|a| a == k.src_addr)
            && dst.is_none_or(|a| a == k.dst_addr)
    };
    Ok((Box::new(f), limit, verbose))
}

/// Renders one command: `status` (everything), `tables` (occupancy), `fixed [filters]`,
/// `wildcard`, `managers`, `stats`.
pub fn render(agent: &Agent, now: u64, cmd: &str) -> String {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.first().copied().unwrap_or("status") {
        "status" => ["tables", "fixed", "wildcard", "managers", "stats"].iter().map(|c| render(agent, now, c)).collect(),
        "tables" => tables(agent),
        "fixed" => fixed(agent, now, &words[1..]),
        "wildcard" => wildcard(agent, now),
        "managers" => managers(agent, now),
        "stats" => stats(agent),
        "clear" if words.get(1) == Some(&"stats") && words.len() == 2 => {
            agent.clear_counters();
            "affinity: counters cleared\n".into()
        }
        // The input is not echoed back (it may be anything a local client sent).
        _ => "error: unknown command (status | tables | fixed [proto P] [src A] [dst A] [limit N] [verbose] | wildcard | managers | stats | clear stats)\n".into(),
    }
}

fn fixed(agent: &Agent, now: u64, filters: &[&str]) -> String {
    let (filter, limit, verbose) = match fixed_filter(filters) {
        Ok(f) => f,
        Err(e) => return format!("error: {e}\n"),
    };
    let rows = agent.fixed_entries(now, limit, filter);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fixed affinities: {} of {} (showing {})",
        agent.fixed_count(now),
        agent.fixed_capacity(),
        rows.len()
    );
    for r in &rows {
        let k = r.key;
        let nat = r
            .actions
            .nat
            .map_or(String::from("-"), |n| nat_text(n.into()));
        let _ = writeln!(
            s,
            "  {} {}:{} -> {}:{}  {}  owner {} ttl {} pkts {} bytes {}",
            proto(k.protocol),
            k.src_addr,
            k.src_port,
            k.dst_addr,
            k.dst_port,
            nat,
            r.owner,
            secs(r.expires_in_ds),
            r.packets,
            r.bytes
        );
        if verbose {
            let a = &r.actions;
            // Operator's words, not Rust's Debug: seq-adjust as the
            // segment's fields, interest as where it goes and its mask.
            let seq = a.seq_adjust.map_or("none".into(), |q| {
                format!(
                    "seq {:+} from {} ack {:+} from {}",
                    q.0 as i32, q.1, q.2 as i32, q.3
                )
            });
            let interest = a.interest.map_or("none".into(), |c| {
                format!(
                    "{}:{} mask {:#06x} flags {:#04x}",
                    Ipv4Addr::from(c.address),
                    c.port,
                    c.mask,
                    c.flags
                )
            });
            let _ = writeln!(
                s,
                "      affinity-id {} dispatch {:#x} info {:#x} forward {} seq-adjust {} interest {} handshake {}",
                a.affinity_id,
                a.dispatch_flags,
                a.info_flags,
                Ipv4Addr::from(a.forward_addr),
                seq,
                interest,
                // The activity reports' mark (manager: SYN seen → established).
                if r.handshake_complete { "complete" } else { "-" }
            );
        }
    }
    s
}

fn wildcard(agent: &Agent, now: u64) -> String {
    let rows = agent.wildcard_entries(now);
    let mut s = String::new();
    let _ = writeln!(s, "wildcard affinities: {}", rows.len());
    for w in rows {
        let k = w.key;
        let _ = writeln!(
            s,
            "  id {} owner {} {} {}/{}:{} -> {}/{}:{} precedence {}{}/{} interest {:#06x} ttl {}",
            w.id,
            w.owner,
            proto(k.protocol),
            k.src_addr,
            u32::from(w.src_mask).count_ones(),
            k.src_port,
            k.dst_addr,
            u32::from(w.dst_mask).count_ones(),
            k.dst_port,
            if w.search_first { "first " } else { "" },
            w.service_precedence,
            w.backup_precedence,
            w.actions.interest.map_or(0, |i| i.mask),
            secs(w.expires_in_ds)
        );
    }
    s
}

/// Occupancy of every table (used / capacity), and per manager.
fn tables(agent: &Agent) -> String {
    let o = agent.occupancy();
    let mut s = String::from("tables (used / capacity):\n");
    for (name, (used, cap)) in [
        ("fixed", o.fixed),
        ("actions", o.actions),
        ("wildcards", o.wildcards),
        ("managers", o.managers),
        ("held", o.held),
    ] {
        let _ = writeln!(s, "  {name:<10} {used} / {cap}");
    }
    // Used / the agent-wide cap: every pattern is one more probe for a
    // packet that misses the fixed table, so an operator sees how close
    // the managers' wildcards are to having one denied.
    let _ = writeln!(
        s,
        "  wildcard mask patterns {} / {} (agent-wide cap)",
        o.wildcard_patterns, o.wildcard_patterns_cap
    );
    for m in &o.per_owner {
        let _ = writeln!(
            s,
            "  owner {}: fixed {} wildcards {}",
            m.manager, m.fixed, m.wildcards
        );
    }
    s
}

fn managers(agent: &Agent, now: u64) -> String {
    let mut s = String::new();
    let m = agent.managers();
    let _ = writeln!(s, "managers: {}", m.len());
    // The warm-up after a start (`Agent::start_warm_up`): its drops are
    // counted as `drop-warm-up-no-affinity`.
    let _ = match agent.warm_up_state(now) {
        None => writeln!(s, "  warm-up: done"),
        Some((waiting, left)) => writeln!(
            s,
            "  warm-up: {:.1}s left, waiting for {}",
            left as f64 / 1e9,
            if waiting.is_empty() {
                String::from("nothing")
            } else {
                waiting
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        ),
    };
    for m in m {
        let _ = writeln!(
            s,
            "  {} {:?} last heard {:.1}s ago, {} messages",
            m.address,
            m.name,
            now.saturating_sub(m.last_heard_ns) as f64 / 1e9,
            m.messages
        );
    }
    s
}

fn stats(agent: &Agent) -> String {
    let mut s = String::from("counters:\n");
    for (name, v) in agent.counters() {
        if v != 0 {
            let _ = writeln!(s, "  {v:>12}  {name}");
        }
    }
    for (a, st) in agent.forward_stats() {
        let _ = writeln!(
            s,
            "  forward {a}: {} packets {} bytes",
            st.packets, st.bytes
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::actions::{ActionSet, InterestKey, SeqAdjustKey};
    use crate::{Agent, AgentConfig};
    use affinity_api::AffinityKey;
    use std::net::Ipv4Addr;

    /// `tables` shows the wildcard mask patterns in use against the
    /// agent-wide cap (default 12).
    #[test]
    fn tables_show_the_wildcard_pattern_cap() {
        let text = super::render(&Agent::new(AgentConfig::default()), 0, "tables");
        assert!(
            text.contains("\n  wildcard mask patterns 0 / 12 (agent-wide cap)\n"),
            "{text}"
        );
    }

    /// `fixed verbose` speaks the operator's words: no Rust `Some(..)` or
    /// struct names, the sequence adjust signed, the interest's address.
    #[test]
    fn fixed_verbose_has_no_debug_text() {
        let a = Agent::new(AgentConfig::default());
        let key = AffinityKey {
            protocol: crate::wire::TCP,
            src_addr: Ipv4Addr::new(198, 18, 0, 11),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            src_port: 40000,
            dst_port: 80,
        };
        let set = ActionSet {
            seq_adjust: Some(SeqAdjustKey(5, 100, (-5i32) as u32, 200)),
            interest: Some(InterestKey {
                address: u32::from(Ipv4Addr::new(192, 0, 2, 10)),
                port: 1638,
                mask: 7,
                flags: 2,
            }),
            ..Default::default()
        };
        a.install_fixed_local(0, key, &set, 60).unwrap();
        let text = super::render(&a, 0, "fixed verbose");
        assert!(
            text.contains("seq-adjust seq +5 from 100 ack -5 from 200"),
            "{text}"
        );
        assert!(
            text.contains("interest 192.0.2.10:1638 mask 0x0007 flags 0x02"),
            "{text}"
        );
        assert!(!text.contains("Some(") && !text.contains("Key {"), "{text}");
    }
}
