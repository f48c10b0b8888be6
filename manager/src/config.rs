//! The manager's TOML configuration, its defaults, and `--check-config`.

use affinity_api::{AuthAlgorithm, AuthPolicy, Key};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub manager: ManagerSection,
    #[serde(default)]
    pub agents: AgentsSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerSection {
    /// Address and port service messages are received on (and sent from).
    pub listen: SocketAddrV4,
    /// Host name sent in identity info.
    #[serde(default = "default_name")]
    pub name: String,
    /// Local control socket of `affinity-manager status` and friends.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Prometheus metrics (`http://ADDR/metrics`); off when absent.
    #[serde(default)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Wildcard time to live (s); wildcards are resent every third of it.
    #[serde(default = "default_wildcard_ttl")]
    pub wildcard_ttl: u32,
    /// Fixed affinity time to live on agents (s); renewed every third of it.
    #[serde(default = "default_fixed_ttl")]
    pub fixed_ttl: u32,
    /// Upper bound on an open flow's whole life (s), however active; 0
    /// (the default) = none, the per-state idle timeouts below decide.
    /// A flow that reaches it is ended like an idle one (TTL 0 to its
    /// agents, kept until no agent may hold it).
    #[serde(default)]
    pub flow_max_lifetime: u32,
    /// Idle timeout (s) of a TCP flow not (yet, or no longer) established:
    /// SYN seen, or one FIN seen. RFC 5382 REQ-5: at least 4 min.
    #[serde(default = "default_tcp_transitory")]
    pub tcp_transitory_timeout: u32,
    /// Idle timeout (s) of an established TCP flow (packets seen both
    /// ways). RFC 5382 REQ-5: at least 2 h 4 min.
    #[serde(default = "default_tcp_established")]
    pub tcp_established_timeout: u32,
    /// Idle timeout (s) of a UDP flow. RFC 4787 REQ-5: at least 2 min,
    /// 5 min recommended.
    #[serde(default = "default_udp_timeout")]
    pub udp_timeout: u32,
    /// Idle timeout (s) of an ICMP query flow. RFC 5508 REQ-1: 60 s.
    #[serde(default = "default_icmp_timeout")]
    pub icmp_timeout: u32,
    /// Send runs of equal-sized datagrams to one agent with UDP segmentation
    /// offload (one send, split by the kernel). An agent that captures
    /// before the kernel segments (VPP af_packet on a veth with offloads
    /// on) sees the run as one datagram of messages back to back, which
    /// the protocol allows and our agents handle. Falls back by itself
    /// where the kernel refuses it.
    #[serde(default = "default_true")]
    pub udp_gso: bool,
}

fn default_name() -> String {
    "affinity-manager".into()
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/affinity-manager.sock")
}
fn default_wildcard_ttl() -> u32 {
    3
}
fn default_fixed_ttl() -> u32 {
    30
}
fn default_true() -> bool {
    true
}
fn default_tcp_transitory() -> u32 {
    240
}
fn default_tcp_established() -> u32 {
    7440
}
fn default_udp_timeout() -> u32 {
    300
}
fn default_icmp_timeout() -> u32 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    /// Multicast group wildcard updates are sent to; none when absent.
    #[serde(default)]
    pub multicast_group: Option<Ipv4Addr>,
    /// Interface address multicast is sent from (default: the listen address).
    #[serde(default)]
    pub multicast_interface: Option<Ipv4Addr>,
    /// Agents that get wildcard updates by unicast.
    #[serde(default)]
    pub unicast: Vec<SocketAddrV4>,
}

impl Default for AgentsSection {
    fn default() -> Self {
        AgentsSection {
            multicast_group: Some(affinity_api::DEFAULT_MULTICAST_GROUP),
            multicast_interface: None,
            unicast: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Accept unsigned IP-packet-only messages even with keys (the seed's
    /// exemption). Off by default: with it on, anyone on the control LAN
    /// can make the manager place flows and answer with signed updates.
    #[serde(default)]
    pub allow_unsigned_ip_packet_only: bool,
    /// How far a signed message's sequence may be ahead of this host's
    /// Unix time `<< 32` (s): bounds how far a key holder can push a replay
    /// window. Default 300.
    #[serde(default = "default_max_ahead")]
    pub max_sequence_ahead_secs: u64,
}

fn default_max_ahead() -> u64 {
    AuthPolicy::DEFAULT_MAX_AHEAD_SECS
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            keys: Vec::new(),
            allow_unsigned_ip_packet_only: false,
            max_sequence_ahead_secs: default_max_ahead(),
        }
    }
}

/// Largest key file read (bytes): a key longer than a hash block adds
/// nothing, and `/dev/zero` must not be read until memory runs out.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Reads a key file: at most [`MAX_KEY_FILE_BYTES`], one trailing newline
/// dropped; errors (text) for an unreadable, empty or over-long file.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    let mut secret = Vec::new();
    f.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut secret)
        .map_err(|e| format!("key file {}: {e}", path.display()))?;
    if secret.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "key file {}: longer than {MAX_KEY_FILE_BYTES} bytes",
            path.display()
        ));
    }
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(format!("key file {}: empty key", path.display()));
    }
    Ok(secret)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: u16,
    /// File holding the secret (trailing newline ignored).
    pub file: PathBuf,
    /// `hmac-sha256` (default) or `keyed-md5`.
    #[serde(default = "default_alg")]
    pub algorithm: String,
    /// Sign outgoing messages with this key (exactly one key sends).
    #[serde(default)]
    pub send: bool,
    /// Identity-info addresses a message signed with this key may claim
    /// (agents' addresses; empty = any). Binds the key to its holders, so
    /// one agent's key cannot speak for another agent.
    #[serde(default)]
    pub identities: Vec<Ipv4Addr>,
}

fn default_alg() -> String {
    "hmac-sha256".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    Maglev,
    Feedback,
}

impl Algorithm {
    /// The name the configuration file uses (`maglev`, `round-robin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::WeightedRoundRobin => "weighted-round-robin",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::Maglev => "maglev",
            Algorithm::Feedback => "feedback",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// Virtual address and port clients connect to.
    #[serde(rename = "virtual")]
    pub virtual_addr: SocketAddrV4,
    /// `tcp` or `udp`.
    #[serde(default = "default_proto")]
    pub protocol: String,
    /// Clients this manager serves, `ADDR/LEN`.
    #[serde(default = "default_domain")]
    pub client_domain: String,
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// Higher is searched first by agents.
    #[serde(default = "default_service_precedence")]
    pub service_precedence: u16,
    /// Lower wins; a backup manager uses a higher value than the primary.
    #[serde(default)]
    pub backup_precedence: u16,
    /// Ask agents to advertise the virtual address.
    #[serde(default)]
    pub advertise: bool,
    /// Actions the service can do without (`advertise`).
    #[serde(default)]
    pub optional_actions: Vec<String>,
    /// TCP only: agents answer SYNs with SYN cookies and punt only proved
    /// handshakes (the admission action's SYN_PROXY flag, PROTOCOL.md
    /// "19 — admission action"). The backends should use window scale 7.
    #[serde(default)]
    pub syn_proxy: bool,
    /// After a close, keep the flow's affinities this long (ms).
    #[serde(default = "default_sticky")]
    pub sticky_timeout_ms: u64,
    /// Source NAT toward backends; absent = backends see the client.
    #[serde(default)]
    pub snat: Option<SnatConfig>,
    /// What happens to the TCP flows of a backend that is removed or goes
    /// unhealthy (IPVS `expire_nodest_conn`): false (default) keeps them
    /// until they close or idle out; true ends them at once (TTL 0 to the
    /// agents). UDP flows are always moved: ended at once, so their next
    /// packet is placed on a backend that is still there.
    #[serde(default)]
    pub expire_nodest_conn: bool,
    /// Hairpin: a client that is itself one of this service's backends is
    /// never placed on itself (its replies would bypass the virtual
    /// address). With `{ address, ports }` here such a client is also
    /// source-NATed to that address (a port from that range), so the
    /// backend it reaches answers through the agents.
    #[serde(default)]
    pub hairpin_snat: Option<SnatConfig>,
    #[serde(default)]
    pub health: Option<HealthConfig>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

fn default_proto() -> String {
    "tcp".into()
}
fn default_domain() -> String {
    "0.0.0.0/0".into()
}
fn default_algorithm() -> Algorithm {
    Algorithm::Maglev
}
fn default_service_precedence() -> u16 {
    100
}
fn default_sticky() -> u64 {
    5000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatConfig {
    pub address: Ipv4Addr,
    /// `LOW-HIGH`.
    pub ports: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `tcp` (connect) or `http` (GET `path`, expect `expect`).
    #[serde(default = "default_proto")]
    pub kind: String,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "two")]
    pub rise: u32,
    #[serde(default = "two")]
    pub fall: u32,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_expect")]
    pub expect: u16,
    /// Whether a backend that has not been checked yet (at start, or added
    /// by a reload) counts as healthy. False (default): it gets no new
    /// flows until its first check passes.
    #[serde(default)]
    pub start_healthy: bool,
}

fn default_interval() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    500
}
fn two() -> u32 {
    2
}
fn default_path() -> String {
    "/".into()
}
fn default_expect() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: SocketAddrV4,
    /// Relative share of new flows, 0 or more (0 drains: no new flows).
    #[serde(default = "one", deserialize_with = "weight")]
    pub weight: u32,
}

/// A weight: a whole number from 0 to 2^32-1. Said in words, not as
/// serde's "expected u32", because operators write `-1` meaning "off".
fn weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let w = i64::deserialize(d)?;
    u32::try_from(w).map_err(|_| {
        serde::de::Error::custom(format!(
            "weight must be a whole number from 0 to {} (0 drains the backend), not {w}",
            u32::MAX
        ))
    })
}

fn one() -> u32 {
    1
}

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line; 0 when the error has no place (the file unreadable).
    pub line: usize,
    /// 1-based column (characters); 0 with `line` 0.
    pub column: usize,
    /// What is wrong, in words (no place).
    pub message: String,
}

impl ConfigError {
    /// `PATH:LINE:COLUMN: message` (the compiler's form, which editors
    /// jump to), or `PATH: message` for an error with no place.
    pub fn located(&self, path: &Path) -> String {
        if self.line == 0 {
            format!("{}: {}", path.display(), self.message)
        } else {
            format!("{}:{self}", path.display())
        }
    }
}

impl std::fmt::Display for ConfigError {
    /// `LINE:COLUMN: message`, or the message alone when it has no place.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        }
    }
}

/// Parses `LEN`-style prefix `A.B.C.D/N` into (address, mask).
pub fn parse_prefix(s: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let a: Ipv4Addr = a.trim().parse().ok()?;
    let l: u32 = l.trim().parse().ok()?;
    if l > 32 {
        return None;
    }
    let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
    Some((Ipv4Addr::from(u32::from(a) & mask), Ipv4Addr::from(mask)))
}

/// Parses `LOW-HIGH`.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

impl ServiceConfig {
    pub fn protocol_number(&self) -> u8 {
        if self.protocol == "udp" {
            17
        } else {
            6
        }
    }
    pub fn domain(&self) -> (Ipv4Addr, Ipv4Addr) {
        parse_prefix(&self.client_domain).unwrap_or((Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED))
    }
    pub fn action_optional(&self, name: &str) -> bool {
        self.optional_actions.iter().any(|a| a == name)
    }
}

/// Longest wildcard TTL accepted (s): an hour. A dead manager's wildcards
/// stay on agents for up to one TTL, so a huge one means no failover.
pub const MAX_WILDCARD_TTL: u32 = 3600;
/// Longest health-check interval or timeout accepted (ms): an hour.
pub const MAX_HEALTH_MS: u64 = 3_600_000;

/// Finds the line/column of the first occurrence of `needle` after the
/// `index`-th `[[service]]` header (for semantic errors).
fn locate(text: &str, index: Option<usize>, needle: &str) -> (usize, usize) {
    let mut start = 0;
    if let Some(i) = index {
        if let Some((pos, _)) = text.match_indices("[[service]]").nth(i) {
            start = pos;
        }
    }
    let pos = text[start..].find(needle).map_or(start, |p| start + p);
    let line = text[..pos].matches('\n').count() + 1;
    let col = pos - text[..pos].rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

impl Config {
    /// Parses and validates; every problem found, each with its place.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| {
                let pos = s.start.min(text.len());
                (
                    text[..pos].matches('\n').count() + 1,
                    pos - text[..pos].rfind('\n').map_or(0, |p| p + 1) + 1,
                )
            });
            vec![ConfigError {
                line,
                column,
                message: e.message().to_string(),
            }]
        })?;
        let mut errors = Vec::new();
        let mut err = |index: Option<usize>, needle: &str, message: String| {
            let (line, column) = locate(text, index, needle);
            errors.push(ConfigError {
                line,
                column,
                message,
            });
        };
        if cfg.manager.wildcard_ttl == 0 || cfg.manager.wildcard_ttl > MAX_WILDCARD_TTL {
            err(
                None,
                "wildcard_ttl",
                format!("wildcard_ttl must be 1..={MAX_WILDCARD_TTL} seconds (failover takes up to one TTL)"),
            );
        }
        if let Some(g) = cfg.agents.multicast_group {
            if !g.is_multicast() {
                err(
                    None,
                    "multicast_group",
                    format!("multicast_group {g} is not a multicast address (224.0.0.0/4)"),
                );
            }
        }
        if cfg.auth.max_sequence_ahead_secs == 0 || cfg.auth.max_sequence_ahead_secs > 86_400 {
            err(
                None,
                "max_sequence_ahead_secs",
                "max_sequence_ahead_secs must be 1..=86400".into(),
            );
        }
        if cfg.manager.fixed_ttl < 3 {
            err(
                None,
                "fixed_ttl",
                "fixed_ttl must be at least 3 seconds (renewed every third)".into(),
            );
        }
        let m = &cfg.manager;
        for (name, v, min) in [
            ("tcp_transitory_timeout", m.tcp_transitory_timeout, 1),
            ("tcp_established_timeout", m.tcp_established_timeout, 1),
            ("udp_timeout", m.udp_timeout, 1),
            ("icmp_timeout", m.icmp_timeout, 1),
        ] {
            if v < min {
                err(None, name, format!("{name} must be at least 1 second"));
            }
        }
        let sends = cfg.auth.keys.iter().filter(|k| k.send).count();
        if !cfg.auth.keys.is_empty() && sends != 1 {
            err(
                None,
                "[auth]",
                format!("exactly one key must have send = true, {sends} do"),
            );
        }
        for k in &cfg.auth.keys {
            if !matches!(k.algorithm.as_str(), "hmac-sha256" | "keyed-md5") {
                err(
                    None,
                    &k.algorithm,
                    format!(
                        "unknown algorithm {:?} (hmac-sha256 or keyed-md5)",
                        k.algorithm
                    ),
                );
            }
            if let Err(e) = read_key_file(&k.file) {
                err(None, &k.file.display().to_string(), e);
            }
        }
        let mut names = HashSet::new();
        let mut vips = Vec::new();
        for (i, s) in cfg.services.iter().enumerate() {
            if !names.insert(s.name.clone()) {
                err(
                    Some(i),
                    "name",
                    format!("service name {:?} used twice", s.name),
                );
            }
            if !matches!(s.protocol.as_str(), "tcp" | "udp") {
                err(
                    Some(i),
                    "protocol",
                    format!("protocol must be tcp or udp, not {:?}", s.protocol),
                );
            }
            if parse_prefix(&s.client_domain).is_none() {
                err(
                    Some(i),
                    "client_domain",
                    format!("client_domain {:?} is not ADDR/LEN", s.client_domain),
                );
            }
            let key = (s.virtual_addr, s.protocol.clone(), s.client_domain.clone());
            if vips.contains(&key) {
                err(Some(i), "virtual", format!("service {:?} overlaps another service (same virtual address, protocol and client domain)", s.name));
            }
            vips.push(key);
            if s.virtual_addr.port() == 0 {
                err(
                    Some(i),
                    "virtual",
                    format!(
                        "virtual address {} needs a port from 1 to 65535 (port 0 is not a service port)",
                        s.virtual_addr
                    ),
                );
            }
            if s.backends.is_empty() {
                err(
                    Some(i),
                    "name",
                    format!("service {:?} has no [[service.backend]]", s.name),
                );
            }
            let mut seen = HashSet::new();
            for b in &s.backends {
                if !seen.insert(b.address) {
                    err(
                        Some(i),
                        &b.address.to_string(),
                        format!("backend {} listed twice in service {:?}", b.address, s.name),
                    );
                }
                if b.address.port() == 0 {
                    err(
                        Some(i),
                        &b.address.to_string(),
                        format!("backend {} needs a port", b.address),
                    );
                }
            }
            if !s.backends.is_empty() && s.backends.iter().all(|b| b.weight == 0) {
                err(
                    Some(i),
                    "weight",
                    format!(
                        "every backend of service {:?} has weight 0: it could place no flow (drain some, not all)",
                        s.name
                    ),
                );
            }
            if let Some(n) = &s.snat {
                if parse_port_range(&n.ports).is_none() {
                    err(
                        Some(i),
                        "ports",
                        format!(
                            "snat ports {:?} is not LOW-HIGH with 0 < LOW <= HIGH",
                            n.ports
                        ),
                    );
                }
            }
            if let Some(h) = &s.health {
                if !matches!(h.kind.as_str(), "tcp" | "http")
                    || h.rise == 0
                    || h.fall == 0
                    || h.interval_ms == 0
                {
                    err(
                        Some(i),
                        "health",
                        "health needs kind tcp|http and rise, fall, interval_ms > 0".into(),
                    );
                }
                if h.interval_ms > MAX_HEALTH_MS
                    || h.timeout_ms == 0
                    || h.timeout_ms > MAX_HEALTH_MS
                {
                    err(
                        Some(i),
                        "health",
                        format!("health interval_ms and timeout_ms must be 1..={MAX_HEALTH_MS} (a 0 timeout fails every check)"),
                    );
                } else if h.timeout_ms > h.interval_ms {
                    err(
                        Some(i),
                        "timeout_ms",
                        format!(
                            "health timeout_ms {} is longer than interval_ms {}: a check would still run when the next starts",
                            h.timeout_ms, h.interval_ms
                        ),
                    );
                }
            }
            for a in &s.optional_actions {
                if a != "advertise" {
                    err(
                        Some(i),
                        "optional_actions",
                        format!("only \"advertise\" can be optional, not {a:?}"),
                    );
                }
            }
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                line: 0,
                column: 0,
                message: format!("cannot read the configuration: {e}"),
            }]
        })?;
        Config::parse(&text)
    }

    /// The authentication policy from the key files.
    pub fn auth_policy(&self) -> AuthPolicy {
        let mut policy = AuthPolicy {
            allow_unsigned_ip_packet_only: self.auth.allow_unsigned_ip_packet_only,
            max_ahead_secs: self.auth.max_sequence_ahead_secs,
            ..AuthPolicy::open()
        };
        for k in &self.auth.keys {
            let Ok(secret) = read_key_file(&k.file) else {
                continue;
            };
            let alg = if k.algorithm == "keyed-md5" {
                AuthAlgorithm::KeyedMd5
            } else {
                AuthAlgorithm::HmacSha256
            };
            let key = Key::new(k.id, alg, secret).for_identities(k.identities.clone());
            if k.send {
                policy.keys.rotate_to(key, 0, 0);
            } else {
                policy.keys.add_accepted(key);
            }
            policy.require = true;
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, ConfigError};
    use std::path::Path;

    const HEAD: &str = "[manager]\nlisten = \"192.0.2.10:1638\"\n[[service]]\nname = \"web\"\n";

    /// The errors for `HEAD` + `rest`, as `LINE:COL: message` lines.
    fn errors(rest: &str) -> Vec<String> {
        match Config::parse(&format!("{HEAD}{rest}")) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(ConfigError::to_string).collect(),
        }
    }

    #[test]
    fn a_backend_listed_twice_is_refused() {
        let e = errors(
            "virtual = \"203.0.113.10:80\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n",
        );
        assert!(
            e.iter()
                .any(|e| e.contains("198.51.100.11:8080 listed twice")),
            "{e:?}"
        );
    }

    #[test]
    fn virtual_port_zero_is_refused() {
        let e = errors(
            "virtual = \"203.0.113.10:0\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n",
        );
        assert!(
            e.iter()
                .any(|e| e.starts_with("5:") && e.contains("needs a port from 1 to 65535")),
            "{e:?}"
        );
    }

    #[test]
    fn all_weights_zero_is_refused_but_some_zero_is_fine() {
        let one = "virtual = \"203.0.113.10:80\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\nweight = 0\n";
        assert!(
            errors(one).iter().any(|e| e.contains("has weight 0")),
            "{:?}",
            errors(one)
        );
        let mixed = format!("{one}[[service.backend]]\naddress = \"198.51.100.12:8080\"\n");
        assert_eq!(errors(&mixed), Vec::<String>::new());
    }

    #[test]
    fn health_timeout_longer_than_interval_is_refused() {
        let e = errors("virtual = \"203.0.113.10:80\"\nhealth = { kind = \"tcp\", interval_ms = 300, timeout_ms = 400 }\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\n");
        assert!(
            e.iter().any(|e| e.starts_with("6:")
                && e.contains("timeout_ms 400 is longer than interval_ms 300")),
            "{e:?}"
        );
    }

    #[test]
    fn a_negative_weight_is_explained_in_words() {
        let e = errors("virtual = \"203.0.113.10:80\"\n[[service.backend]]\naddress = \"198.51.100.11:8080\"\nweight = -1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("8:"), "{e:?}");
        assert!(
            e[0].contains("weight must be a whole number from 0"),
            "{e:?}"
        );
        assert!(e[0].contains("not -1"), "{e:?}");
        assert!(!e[0].contains("u32"), "{e:?}");
    }

    #[test]
    fn a_missing_file_is_named_without_a_place() {
        let path = Path::new("/nonexistent/affinity-manager.toml");
        let e = Config::load(path).unwrap_err();
        let text = e[0].located(path);
        assert!(
            text.starts_with("/nonexistent/affinity-manager.toml: cannot read"),
            "{text}"
        );
        assert!(!text.contains(":0:0:"), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }
}
