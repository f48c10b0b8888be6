//! `affinity-agent status` and friends: the same tables `vppctl show
//! affinity` prints, in the same shape.

use affinity_plugin::Agent;
use std::fmt::Write as _;
use std::path::Path;

fn proto(p: u8) -> String {
    match p {
        0 => "any".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

fn secs(ds: i64) -> String {
    format!("{:.1}s", ds as f64 / 10.0)
}

/// Renders one command's answer.
pub fn render(agent: &Agent, now: u64, cmd: &str) -> String {
    let mut s = String::new();
    match cmd {
        "fixed" | "status" => {
            let rows = agent.fixed_entries(now, 1000, |_| true);
            let _ = writeln!(
                s,
                "fixed affinities: {} of {}",
                agent.fixed_count(now),
                agent.fixed_capacity()
            );
            for r in &rows {
                let k = r.key;
                let nat = r.actions.nat.map_or(String::from("-"), |n| {
                    let n: affinity_api::NatAction = n.into();
                    format!(
                        "nat{}{}{}{}",
                        if n.flags & 1 != 0 {
                            format!(" src {}", n.src_addr)
                        } else {
                            String::new()
                        },
                        if n.flags & 4 != 0 {
                            format!(":{}", n.src_port)
                        } else {
                            String::new()
                        },
                        if n.flags & 2 != 0 {
                            format!(" dst {}", n.dst_addr)
                        } else {
                            String::new()
                        },
                        if n.flags & 8 != 0 {
                            format!(":{}", n.dst_port)
                        } else {
                            String::new()
                        }
                    )
                });
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
            }
            if cmd == "fixed" {
                return s;
            }
            s.push_str(&render(agent, now, "wildcard"));
            s.push_str(&render(agent, now, "managers"));
            s.push_str(&render(agent, now, "stats"));
        }
        "wildcard" => {
            let rows = agent.wildcard_entries(now);
            let _ = writeln!(s, "wildcard affinities: {}", rows.len());
            for w in rows {
                let k = w.key;
                let _ = writeln!(s, "  id {} owner {} {} {}/{}:{} -> {}/{}:{} precedence {}{}/{} interest {:#06x} ttl {}", w.id, w.owner, proto(k.protocol), k.src_addr, u32::from(w.src_mask).count_ones(), k.src_port, k.dst_addr, u32::from(w.dst_mask).count_ones(), k.dst_port, if w.search_first { "first " } else { "" }, w.service_precedence, w.backup_precedence, w.actions.interest.map_or(0, |i| i.mask), secs(w.expires_in_ds));
            }
        }
        "managers" => {
            for m in agent.managers() {
                let _ = writeln!(
                    s,
                    "manager {} {:?} last heard {:.1}s ago, {} messages",
                    m.address,
                    m.name,
                    now.saturating_sub(m.last_heard_ns) as f64 / 1e9,
                    m.messages
                );
            }
        }
        "stats" => {
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
        }
        other => {
            let _ = writeln!(
                s,
                "error: unknown command {other:?} (status|fixed|wildcard|managers|stats)"
            );
        }
    }
    s
}

/// Asks a running agent.
pub fn client(path: &Path, cmd: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is the agent running?)", path.display()),
        )
    })?;
    c.write_all(format!("{cmd}\n").as_bytes())?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}
