//! The host agent's command line (clap): running it (`--tun`, `--address`,
//! managers, keys, quotas, ...) or asking a running one over its status
//! socket (`status`, `fixed`, `tables`, ...), and the settings built from it.

use crate::routes;
use affinity_api::{AuthAlgorithm, AuthPolicy, Key, AGENT_PORT};
use affinity_forwarding_agent::AgentConfig;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The affinity host forwarding agent: runs forwarded traffic from a TUN
/// device through the affinity tables, under the service managers.
#[derive(Debug, Parser)]
#[command(
    name = "affinity-agent",
    version,
    after_help = "Without a command, runs the agent (needs --tun and --address). With a command, asks a running agent over --socket.\nControl messages are accepted only from the --manager addresses unless --accept-any-manager is given. Without --key-file the agent runs in OPEN mode (no authentication): trusted LANs only.\nLogs go to stderr (RUST_LOG=debug for more). SIGHUP says hello to the managers again; SIGTERM/SIGINT stop."
)]
pub(crate) struct Cli {
    /// TUN device to create or attach to (brought up by the agent).
    #[arg(long, value_name = "NAME")]
    tun: Option<String>,
    /// This router's control address: source of punts, its identity.
    #[arg(long, value_name = "ADDR")]
    address: Option<Ipv4Addr>,
    /// Host name sent in identity info.
    #[arg(long)]
    name: Option<String>,
    /// UDP port for service messages from managers.
    #[arg(long, value_name = "PORT", default_value_t = AGENT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    listen: u16,
    /// Multicast group of wildcard updates to join.
    #[arg(long, value_name = "GROUP")]
    multicast_group: Option<Ipv4Addr>,
    /// A manager to say hello to and accept control from (repeatable).
    #[arg(long = "manager", value_name = "ADDR")]
    managers: Vec<Ipv4Addr>,
    /// Accept control messages from any address, not only the --manager ones.
    #[arg(long)]
    accept_any_manager: bool,
    /// File holding the shared key (trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Key id of --key-file.
    #[arg(long, value_name = "N", default_value_t = 1)]
    key_id: u16,
    /// Algorithm of --key-file.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::HmacSha256)]
    key_algorithm: KeyAlgorithm,
    /// A manager identity (address) the key may speak for (repeatable;
    /// none = any identity).
    #[arg(long = "key-identity", value_name = "ADDR")]
    key_identities: Vec<Ipv4Addr>,
    /// Fixed affinities one manager may hold (default: the core's).
    #[arg(long, value_name = "N", value_parser = in_range::<1, MAX_TABLE>)]
    fixed_quota: Option<usize>,
    /// Wildcards one manager may hold (default: the core's).
    #[arg(long, value_name = "N", value_parser = in_range::<1, MAX_TABLE>)]
    wildcard_quota: Option<usize>,
    /// Distinct wildcard mask patterns one manager may use (default 8).
    #[arg(long, value_name = "N", value_parser = in_range::<1, MAX_PATTERNS>)]
    pattern_quota: Option<usize>,
    /// Distinct wildcard mask patterns all managers together may use
    /// (default 12; each costs a probe per packet that matches no fixed
    /// affinity).
    #[arg(long, value_name = "N", value_parser = in_range::<1, MAX_PATTERNS>)]
    max_wildcard_patterns: Option<usize>,
    /// Control socket receive buffer (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20,
          value_parser = in_range::<4096, { 1 << 30 }>)]
    rcvbuf: usize,
    /// How often each manager gets an activity report of the fixed
    /// affinities that carried packets (ms; 0 = never). Managers renew only
    /// flows reported active.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    activity_report_interval_ms: u64,
    /// Warm-up after start (ms; 0 = none): until every --manager's first
    /// wildcard update arrived (its resync after our hello) or this long,
    /// TCP segments other than bare SYNs that match no affinity are dropped
    /// rather than routed untranslated (a backend's bare reply would draw
    /// a RST from the client).
    #[arg(long, value_name = "MS", default_value_t = affinity_forwarding_agent::DEFAULT_WARM_UP_MS)]
    warm_up_ms: u64,
    /// Treat an action as unsupported (repeatable): nat, advertise, seq-adjust, interest.
    #[arg(long = "disable-action", value_name = "ACTION", value_parser = parse_action)]
    disabled_actions: Vec<u16>,
    /// Fixed affinity table size (entries; two per flow; the table takes
    /// about 64 bytes per entry).
    #[arg(long, value_name = "N", default_value_t = 1 << 18,
          value_parser = in_range::<1, MAX_TABLE>)]
    fixed_capacity: usize,
    /// Advertised prefixes become kernel routes through the TUN with this
    /// route protocol number (0 = install no routes).
    #[arg(long, value_name = "N", default_value_t = routes::DEFAULT_ROUTE_PROTOCOL)]
    route_protocol: u8,
    /// Status socket (served when running, asked by commands).
    #[arg(long, value_name = "PATH", default_value = "/run/affinity-agent.sock")]
    pub(crate) socket: PathBuf,
    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    #[command(subcommand)]
    pub(crate) command: Option<Cmd>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyAlgorithm {
    HmacSha256,
    KeyedMd5,
}

fn parse_action(name: &str) -> Result<u16, String> {
    affinity_forwarding_agent::actions::action_segment_by_name(name)
        .ok_or_else(|| format!("unknown action {name:?} (nat, advertise, seq-adjust, interest)"))
}

/// Questions to a running agent (over --socket).
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Everything: fixed, wildcard, managers, stats.
    Status {
        /// Machine-readable: one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Fixed affinities; filters: proto P, src A, dst A, limit N, verbose.
    Fixed {
        #[arg(long)]
        json: bool,
        filters: Vec<String>,
    },
    /// Wildcard affinities.
    Wildcard {
        #[arg(long)]
        json: bool,
    },
    /// Table occupancy (used / capacity), each manager's share and the
    /// warm-up state.
    Tables {
        #[arg(long)]
        json: bool,
    },
    /// Managers heard from.
    Managers {
        #[arg(long)]
        json: bool,
    },
    /// Counters (non-zero; --json: all) and forward statistics.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// `clear stats`: counters restart from zero.
    Clear {
        #[arg(value_parser = ["stats"])]
        what: String,
    },
}

impl Cmd {
    /// The status-socket line.
    pub(crate) fn line(&self) -> String {
        let (words, json) = match self {
            Cmd::Status { json } => ("status".to_string(), *json),
            Cmd::Fixed { json, filters } => {
                let mut w = vec!["fixed".to_string()];
                w.extend(filters.iter().cloned());
                (w.join(" "), *json)
            }
            Cmd::Wildcard { json } => ("wildcard".to_string(), *json),
            Cmd::Tables { json } => ("tables".to_string(), *json),
            Cmd::Managers { json } => ("managers".to_string(), *json),
            Cmd::Stats { json } => ("stats".to_string(), *json),
            Cmd::Clear { what } => (format!("clear {what}"), false),
        };
        if json {
            format!("{words} --json")
        } else {
            words
        }
    }
}

pub(crate) struct Opts {
    pub(crate) tun: String,
    pub(crate) socket: PathBuf,
    pub(crate) listen: u16,
    pub(crate) group: Option<Ipv4Addr>,
    pub(crate) managers: Vec<Ipv4Addr>,
    pub(crate) metrics: Option<SocketAddr>,
    /// Route protocol number of advertised prefixes' kernel routes; 0 =
    /// do not install routes.
    pub(crate) route_protocol: u8,
    /// Control socket receive buffer (bytes): a burst of updates must not
    /// overflow the kernel default (~200 KiB) while a batch is applied.
    pub(crate) rcvbuf: usize,
    /// Warm-up hold-down (ms; see `Agent::start_warm_up`).
    pub(crate) warm_up_ms: u64,
    pub(crate) cfg: AgentConfig,
}

/// Reads a key file (the core's bounded reader,
/// [`affinity_forwarding_agent::config::read_key_file`]); the error text
/// names the file.
pub(crate) fn read_key_file(path: &str) -> Result<Vec<u8>, String> {
    affinity_forwarding_agent::config::read_key_file(std::path::Path::new(path))
        .map_err(|e| format!("{path}: {e}"))
}

/// Largest table size or quota the options take (entries): 2^28 fixed
/// entries are some 16 GiB of table, past any machine this runs on.
const MAX_TABLE: usize = 1 << 28;
/// Largest wildcard mask-pattern cap the options take: each pattern in
/// use is a probe per packet that matches no fixed affinity.
const MAX_PATTERNS: usize = 1024;

/// A count option within `LO..=HI`: clap's error names the option and the
/// range (e.g. `--max-wildcard-patterns 0`: an agent that could install
/// no wildcard at all).
fn in_range<const LO: usize, const HI: usize>(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (LO..=HI).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not in {LO}..={HI}"))
    }
}

pub(crate) fn opts(cli: Cli) -> Result<Opts, String> {
    let (Some(tun), Some(address)) = (cli.tun, cli.address) else {
        return Err("to run, give --tun NAME and --address ADDR (or a command)".into());
    };
    let mut cfg = AgentConfig {
        fixed_capacity: cli.fixed_capacity,
        action_capacity: 1 << 16,
        agent_addr: address,
        disabled_actions: cli.disabled_actions,
        activity_report_interval_ms: cli.activity_report_interval_ms,
        ..Default::default()
    };
    if let Some(n) = cli.name {
        cfg.agent_name = n;
    }
    if let Some(f) = cli.key_file {
        let secret = read_key_file(&f.to_string_lossy())?;
        let alg = match cli.key_algorithm {
            KeyAlgorithm::HmacSha256 => AuthAlgorithm::HmacSha256,
            KeyAlgorithm::KeyedMd5 => AuthAlgorithm::KeyedMd5,
        };
        cfg.auth = AuthPolicy::with_key(
            Key::new(cli.key_id, alg, secret).for_identities(cli.key_identities),
        );
    }
    if let Some(n) = cli.fixed_quota {
        cfg.owner_quota.fixed = n;
    }
    if let Some(n) = cli.wildcard_quota {
        cfg.owner_quota.wildcards = n;
    }
    if let Some(n) = cli.pattern_quota {
        cfg.owner_quota.wildcard_patterns = n;
    }
    if let Some(n) = cli.max_wildcard_patterns {
        cfg.max_wildcard_patterns = n;
    }
    if !cli.accept_any_manager {
        cfg.allowed_managers = Some(cli.managers.clone());
    }
    cfg.multicast_groups.extend(cli.multicast_group);
    cfg.instance_id = u32::from(cfg.agent_addr) ^ std::process::id();
    Ok(Opts {
        tun,
        socket: cli.socket,
        listen: cli.listen,
        group: cli.multicast_group,
        managers: cli.managers,
        metrics: cli.metrics,
        route_protocol: cli.route_protocol,
        rcvbuf: cli.rcvbuf,
        warm_up_ms: cli.warm_up_ms,
        cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let mut v = vec!["affinity-agent", "--tun", "t0", "--address", "192.0.2.1"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map_err(|e| e.to_string())
    }

    /// Values that would leave an agent that installs nothing, listens
    /// nowhere or has no real table bound are refused by name; the
    /// bounds themselves are taken.
    #[test]
    fn nonsense_counts_are_refused_and_bounds_taken() {
        for bad in [
            &["--max-wildcard-patterns", "0"][..],
            &["--max-wildcard-patterns", "18446744073709551615"],
            &["--pattern-quota", "0"],
            &["--wildcard-quota", "0"],
            &["--fixed-quota", "0"],
            &["--fixed-capacity", "0"],
            &["--fixed-capacity", "18446744073709551615"],
            &["--listen", "0"],
            &["--rcvbuf", "0"],
        ] {
            let e = parse(bad).err().unwrap_or_default();
            assert!(e.contains(bad[0]), "{bad:?} accepted or unnamed: {e}");
        }
        for good in [
            &["--max-wildcard-patterns", "1"][..],
            &["--max-wildcard-patterns", "1024"],
            &["--fixed-capacity", "268435456"],
            &["--listen", "1637"],
            &["--rcvbuf", "4096"],
        ] {
            assert!(parse(good).is_ok(), "{good:?} refused");
        }
    }
}
