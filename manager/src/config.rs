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
    /// Open flows are forgotten after this long without a close (s).
    #[serde(default = "default_flow_lifetime")]
    pub flow_max_lifetime: u32,
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
fn default_flow_lifetime() -> u32 {
    3600
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Accept unsigned IP-packet-only messages (seed).
    #[serde(default = "yes")]
    pub allow_unsigned_ip_packet_only: bool,
}

fn yes() -> bool {
    true
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
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
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
        if cfg.manager.wildcard_ttl == 0 {
            err(
                None,
                "wildcard_ttl",
                "wildcard_ttl must be at least 1 second".into(),
            );
        }
        if cfg.manager.fixed_ttl < 3 {
            err(
                None,
                "fixed_ttl",
                "fixed_ttl must be at least 3 seconds (renewed every third)".into(),
            );
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
            if let Err(e) = std::fs::read(&k.file) {
                err(
                    None,
                    &k.file.display().to_string(),
                    format!("key file {}: {e}", k.file.display()),
                );
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
            if s.backends.is_empty() {
                err(
                    Some(i),
                    "name",
                    format!("service {:?} has no [[service.backend]]", s.name),
                );
            }
            for b in &s.backends {
                if b.address.port() == 0 {
                    err(
                        Some(i),
                        &b.address.to_string(),
                        format!("backend {} needs a port", b.address),
                    );
                }
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
                message: format!("{}: {e}", path.display()),
            }]
        })?;
        Config::parse(&text)
    }

    /// The authentication policy from the key files.
    pub fn auth_policy(&self) -> AuthPolicy {
        let mut policy = AuthPolicy {
            allow_unsigned_ip_packet_only: self.auth.allow_unsigned_ip_packet_only,
            ..AuthPolicy::open()
        };
        for k in &self.auth.keys {
            let Ok(secret) = std::fs::read(&k.file) else {
                continue;
            };
            let secret = secret
                .strip_suffix(b"\n")
                .map(<[u8]>::to_vec)
                .unwrap_or(secret);
            let alg = if k.algorithm == "keyed-md5" {
                AuthAlgorithm::KeyedMd5
            } else {
                AuthAlgorithm::HmacSha256
            };
            let key = Key::new(k.id, alg, secret);
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
