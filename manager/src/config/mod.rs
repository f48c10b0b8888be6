//! The manager's TOML configuration and its defaults; `check.rs` parses
//! and validates it (`--check-config`: every problem with its line and
//! column).

use affinity_api::{AuthAlgorithm, AuthPolicy, Key};
use serde::Deserialize;
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
    /// Half-open TCP flows (placed on a SYN, not yet seen established,
    /// closed or ended) each service (its virtual address and client
    /// domain) may have; what a SYN past it does is the service's
    /// `half_open_policy`: by default the oldest half-open flow is evicted
    /// (`half-open-evicted`), with `refuse` the SYN is refused (not placed,
    /// counted as `half-open-limit-refused`); either logged at most once a
    /// second. Bounds what a SYN flood makes the manager keep. Flows leave
    /// the state when the activity reports show the handshake completed
    /// both ways (each affinity marked by a TCP ACK without SYN or RST;
    /// packets both ways from agents without the marks:
    /// `Flow::note_activity`), so the limit should exceed
    /// new connections per second × 2 activity-report intervals (default
    /// 10 s). 0 = no limit. Default 100 000.
    #[serde(default = "default_max_half_open")]
    pub max_half_open_flows: u32,
    /// Datagrams received and not yet handled the daemon keeps, oldest
    /// first (and at most [`RECEIVE_QUEUE_BYTES`]); past it the newest are
    /// dropped, counted as `rx-queue-dropped` and logged at most once a
    /// second. Default 8192 (a few tens of ms of work at the manager's
    /// flow-setup cost), 1..=1 048 576.
    #[serde(default = "default_receive_queue")]
    pub receive_queue: u32,
    /// The service-message socket's kernel receive buffer (bytes,
    /// `SO_RCVBUF`; the kernel caps it at `net.core.rmem_max`, and a
    /// smaller grant is logged). What arrives faster than the loop reads
    /// (an agent's activity report of 20 000 flows is about 1 700
    /// datagrams, back to back) waits here; past it the kernel drops,
    /// counted as `rx-kernel-dropped`. Default 8 MiB, as the host agent's
    /// `--rcvbuf`; 4096..=1 GiB.
    #[serde(default = "default_receive_buffer")]
    pub receive_buffer: u32,
}

/// Largest `receive_buffer` accepted (bytes): 1 GiB.
pub const MAX_RECEIVE_BUFFER: u32 = 1 << 30;

/// Bytes of datagrams the daemon's receive queue holds at most (16 MiB),
/// whatever `receive_queue` says: large datagrams fill it sooner.
pub const RECEIVE_QUEUE_BYTES: usize = 16 << 20;
/// Largest `receive_queue` accepted (datagrams).
pub const MAX_RECEIVE_QUEUE: u32 = 1 << 20;

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
fn default_max_half_open() -> u32 {
    100_000
}
fn default_receive_queue() -> u32 {
    8192
}
fn default_receive_buffer() -> u32 {
    8 << 20
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

/// Largest key file read (bytes): the forwarding-agent core's limit, one
/// rule for every reader of key files.
pub use affinity_forwarding_agent::config::MAX_KEY_FILE_BYTES;

/// Reads a key file with the core's bounded reader (at most
/// [`MAX_KEY_FILE_BYTES`], one trailing newline dropped, not empty); the
/// error text names the file.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    affinity_forwarding_agent::config::read_key_file(path)
        .map_err(|e| format!("key file {}: {e}", path.display()))
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

/// What a new TCP flow of a service (a SYN) does when the service has
/// `max_half_open_flows` half-open flows already (`half_open_policy`).
/// Read from a string (`try_from`), so a value of another type is told as
/// "expected a string", not as TOML's "wanted string or table".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HalfOpenPolicy {
    /// The default: the service's oldest half-open flow is ended (TTL 0 to
    /// its agents, its keys and source-NAT port freed at once; counted as
    /// `half-open-evicted`) and the new one placed, as VPP nat44-ed frees
    /// the oldest transitory session of its LRU at its session limit. A
    /// flood of spoofed SYNs then costs each of its flows its place after
    /// `max_half_open_flows` / (SYNs per second) seconds (10 s at 10 000
    /// SYN/s and the default 100 000), and new clients keep being placed.
    /// Refused still (`half-open-limit-refused`) when the oldest half-open
    /// flow may not be evicted yet: younger than [`HALF_OPEN_MIN_AGE_NS`]
    /// (a handshake may be in progress), or younger than 30 s and not yet
    /// shown half-open by an activity report (it may be a real connection
    /// whose agents have not reported it established yet; see
    /// `Flow::evictable`).
    EvictOldest,
    /// SYNs past the limit are refused (`half-open-limit-refused`) until
    /// half-open flows leave the state (established, closed, or ended idle
    /// after `tcp_transitory_timeout`).
    Refuse,
}

impl TryFrom<String> for HalfOpenPolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "evict-oldest" => Ok(HalfOpenPolicy::EvictOldest),
            "refuse" => Ok(HalfOpenPolicy::Refuse),
            other => Err(format!(
                "unknown half_open_policy {other:?}, expected \"evict-oldest\" or \"refuse\""
            )),
        }
    }
}

impl HalfOpenPolicy {
    /// The name the configuration file uses.
    pub fn name(self) -> &'static str {
        match self {
            HalfOpenPolicy::EvictOldest => "evict-oldest",
            HalfOpenPolicy::Refuse => "refuse",
        }
    }
}

/// Youngest half-open flow `evict-oldest` ends (ns): 1 s, the initial
/// retransmission timeout of RFC 6298 section 2.1 (a client whose SYN or
/// SYN-ACK was lost sends its SYN again after it), so a handshake under
/// way is not cut; a service whose oldest half-open flow is younger takes
/// more than `max_half_open_flows` SYNs a second, and the SYN is refused.
pub const HALF_OPEN_MIN_AGE_NS: u64 = 1_000_000_000;

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
    /// TCP only: what a SYN does when the service already has
    /// `[manager] max_half_open_flows` half-open flows. Absent =
    /// [`HalfOpenPolicy::EvictOldest`]; see [`HalfOpenPolicy`].
    #[serde(default)]
    pub half_open_policy: Option<HalfOpenPolicy>,
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
    /// The `half_open_policy` in force (`evict-oldest` when absent).
    pub fn half_open_policy(&self) -> HalfOpenPolicy {
        self.half_open_policy.unwrap_or(HalfOpenPolicy::EvictOldest)
    }
}

/// Longest wildcard TTL accepted (s): an hour. A dead manager's wildcards
/// stay on agents for up to one TTL, so a huge one means no failover.
pub const MAX_WILDCARD_TTL: u32 = 3600;
/// Longest health-check interval or timeout accepted (ms): an hour.
pub const MAX_HEALTH_MS: u64 = 3_600_000;

mod check;

impl Config {
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
mod tests;
