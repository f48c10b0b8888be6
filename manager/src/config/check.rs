//! `Config::parse`: TOML into [`Config`], then every check that would break
//! the service, each error with its line and column in the file.

use super::{
    parse_port_range, parse_prefix, read_key_file, Config, ConfigError, MAX_HEALTH_MS,
    MAX_RECEIVE_BUFFER, MAX_RECEIVE_QUEUE, MAX_WILDCARD_TTL,
};
use std::collections::HashSet;

/// Finds the line/column of the key `needle` (a `needle =` assignment, a
/// `[...needle]` table header, or `needle` itself when it is a header such
/// as `[auth]`) after the `index`-th `[[service]]` header, for semantic
/// errors. Text in comments and inside longer names (`timeout_ms` in
/// `sticky_timeout_ms`) does not count; with no such key, the first
/// occurrence anywhere after the header.
fn locate(text: &str, index: Option<usize>, needle: &str) -> (usize, usize) {
    let mut start = 0;
    if let Some(i) = index {
        if let Some((pos, _)) = text.match_indices("[[service]]").nth(i) {
            start = pos;
        }
    }
    let hay = &text[start..];
    let is_key = |p: usize| {
        let line_start = hay[..p].rfind('\n').map_or(0, |i| i + 1);
        let before = &hay[line_start..p];
        if before.contains('#') {
            return false;
        }
        let prev_ok = before
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '[' | '.'));
        let after = hay[p + needle.len()..].trim_start_matches([' ', '\t']);
        let next_ok = needle.starts_with('[') || after.starts_with('=') || after.starts_with(']');
        prev_ok && next_ok
    };
    let pos = hay
        .match_indices(needle)
        .map(|(p, _)| p)
        .find(|&p| is_key(p))
        .or_else(|| hay.find(needle))
        .map_or(start, |p| start + p);
    let line = text[..pos].matches('\n').count() + 1;
    let col = pos - text[..pos].rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

/// Longest `fixed_ttl` accepted (s): a day. The TTL is also how long an
/// agent keeps a flow of a manager that died, so it must stay bounded.
const MAX_FIXED_TTL: u32 = 86_400;

/// An address a host can have: not 0.0.0.0, the limited broadcast or a
/// multicast group.
fn usable_host(a: std::net::Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
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
        if cfg.manager.fixed_ttl < 3 || cfg.manager.fixed_ttl > MAX_FIXED_TTL {
            err(
                None,
                "fixed_ttl",
                format!("fixed_ttl must be 3..={MAX_FIXED_TTL} seconds (renewed every third; a dead manager's flows live one TTL)"),
            );
        }
        if cfg.manager.receive_queue == 0 || cfg.manager.receive_queue > MAX_RECEIVE_QUEUE {
            err(
                None,
                "receive_queue",
                format!("receive_queue must be 1..={MAX_RECEIVE_QUEUE} datagrams"),
            );
        }
        if !(4096..=MAX_RECEIVE_BUFFER).contains(&cfg.manager.receive_buffer) {
            err(
                None,
                "receive_buffer",
                format!("receive_buffer must be 4096..={MAX_RECEIVE_BUFFER} bytes"),
            );
        }
        for a in &cfg.agents.unicast {
            if a.port() == 0 || !usable_host(*a.ip()) {
                err(
                    None,
                    "unicast",
                    format!("unicast agent {a} needs a host address and a port from 1 to 65535"),
                );
            }
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
        let mut ids = HashSet::new();
        for k in &cfg.auth.keys {
            if !ids.insert(k.id) {
                err(
                    None,
                    "[auth]",
                    format!(
                        "key id {} listed twice (a receiver could not tell the keys apart)",
                        k.id
                    ),
                );
            }
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
            if s.syn_proxy && s.protocol != "tcp" {
                // SYN cookies are TCP's (RFC 4987): on a UDP service the
                // option would do nothing, silently.
                err(
                    Some(i),
                    "syn_proxy",
                    format!("syn_proxy is for tcp services, not {:?}", s.protocol),
                );
            }
            if s.half_open_policy.is_some() && s.protocol != "tcp" {
                // Half-open is a TCP state: on a UDP service the option
                // would do nothing, silently.
                err(
                    Some(i),
                    "half_open_policy",
                    format!("half_open_policy is for tcp services, not {:?}", s.protocol),
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
            if !usable_host(*s.virtual_addr.ip()) {
                err(
                    Some(i),
                    "virtual",
                    format!(
                        "virtual address {} must be a unicast host address (not 0.0.0.0, broadcast or multicast)",
                        s.virtual_addr.ip()
                    ),
                );
            }
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
                if !usable_host(*b.address.ip()) {
                    err(
                        Some(i),
                        &b.address.to_string(),
                        format!(
                            "backend {} must be a unicast host address (not 0.0.0.0, broadcast or multicast)",
                            b.address.ip()
                        ),
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
                if h.kind == "http" {
                    // The path goes into the request line as is: it must be
                    // an origin-form path, no spaces or control characters
                    // (a CR/LF would inject headers).
                    let path_ok =
                        h.path.starts_with('/') && h.path.bytes().all(|b| b.is_ascii_graphic());
                    if !path_ok {
                        err(
                            Some(i),
                            "path",
                            format!("health path {:?} must start with / and hold no spaces or control characters", h.path),
                        );
                    }
                    if !(100..=599).contains(&h.expect) {
                        err(
                            Some(i),
                            "expect",
                            format!("health expect {} is not an HTTP status (100-599)", h.expect),
                        );
                    }
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
}
