//! The command language of the local control socket (`affinity-manager
//! status`, `set-weight`, ...): one line in, one [`Command`] out. The core
//! executes it ([`super::ManagerCore::command`]).

use std::net::SocketAddrV4;

/// Connections listed at most unless `--limit` says otherwise.
pub const DEFAULT_CONNECTIONS_LIMIT: usize = 1000;

/// A command from the local control socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Human-readable services, backends, agents and counters.
    Status,
    /// The same as JSON ([`super::StatusReport`]): `status --json`.
    StatusJson,
    /// Prometheus text exposition.
    Metrics,
    /// Per-service and per-backend traffic summed over the agents'
    /// activity reports, with rates (`stats [--json]`; `ipvsadm -Ln
    /// --stats --rate`).
    Stats { json: bool },
    /// The flows placed, both sides' 5-tuples, state, age, expiry and
    /// agents (`connections [--json] [--limit N] [SERVICE [BACKEND]]`;
    /// `ipvsadm -Lnc`): at most `limit` of them, oldest first.
    Connections {
        service: Option<String>,
        backend: Option<SocketAddrV4>,
        limit: usize,
        json: bool,
    },
    /// A backend's configured weight (0 drains: existing flows stay).
    SetWeight {
        service: String,
        backend: SocketAddrV4,
        weight: u32,
    },
    /// Feedback algorithm: the backend's load in percent (0-100; more is
    /// refused, as is a service with another algorithm).
    LoadReport {
        service: String,
        backend: SocketAddrV4,
        load: u32,
    },
}

impl Command {
    /// Parses one line: `status`, `status --json`, `metrics`, `stats
    /// [--json]`, `connections [--json] [--limit N] [SERVICE [BACKEND]]`
    /// (limit [`DEFAULT_CONNECTIONS_LIMIT`] unless given), `set-weight SERVICE ADDR:PORT
    /// W`, `drain SERVICE ADDR:PORT` (weight 0), `load-report SERVICE
    /// ADDR:PORT LOAD` (the core refuses more than 100). The error names the bad word, or
    /// lists the commands.
    pub fn parse(line: &str) -> Result<Command, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let backend = |s: &str| {
            s.parse::<SocketAddrV4>()
                .map_err(|_| format!("{s:?} is not ADDR:PORT"))
        };
        match w.as_slice() {
            ["status"] => Ok(Command::Status),
            ["status", "--json"] => Ok(Command::StatusJson),
            ["metrics"] => Ok(Command::Metrics),
            ["stats"] => Ok(Command::Stats { json: false }),
            ["stats", "--json"] => Ok(Command::Stats { json: true }),
            ["connections", rest @ ..] => {
                let mut json = false;
                let mut limit = DEFAULT_CONNECTIONS_LIMIT;
                let mut words = Vec::new();
                let mut it = rest.iter();
                while let Some(a) = it.next() {
                    match *a {
                        "--json" => json = true,
                        "--limit" => {
                            let n = it.next().ok_or("--limit needs a number")?;
                            limit = n.parse().map_err(|_| format!("bad limit {n:?}"))?;
                        }
                        w => words.push(w),
                    }
                }
                let (service, backend) = match words.as_slice() {
                    [] => (None, None),
                    [s] => (Some(s.to_string()), None),
                    [s, b] => (Some(s.to_string()), Some(backend(b)?)),
                    _ => return Err("connections [--json] [--limit N] [SERVICE [BACKEND]]".to_string()),
                };
                Ok(Command::Connections { service, backend, limit, json })
            }
            ["set-weight", s, b, n] => Ok(Command::SetWeight { service: s.to_string(), backend: backend(b)?, weight: n.parse().map_err(|_| format!("bad weight {n:?}"))? }),
            ["drain", s, b] => Ok(Command::SetWeight { service: s.to_string(), backend: backend(b)?, weight: 0 }),
            ["load-report", s, b, n] => Ok(Command::LoadReport { service: s.to_string(), backend: backend(b)?, load: n.parse::<u32>().map_err(|_| format!("bad load {n:?}"))? }),
            _ => Err(format!("unknown command {line:?}; try: status [--json] | stats [--json] | connections [--json] [--limit N] [SERVICE [BACKEND]] | metrics | set-weight SERVICE BACKEND W | drain SERVICE BACKEND | load-report SERVICE BACKEND LOAD(0-100)")),
        }
    }
}

impl std::fmt::Display for Command {
    /// The command's line, as [`Command::parse`] reads it back (what the
    /// CLI sends, and what the daemon logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Status => write!(f, "status"),
            Command::StatusJson => write!(f, "status --json"),
            Command::Metrics => write!(f, "metrics"),
            Command::Stats { json } => {
                write!(f, "stats{}", if *json { " --json" } else { "" })
            }
            Command::Connections {
                service,
                backend,
                limit,
                json,
            } => {
                write!(f, "connections --limit {limit}")?;
                if *json {
                    write!(f, " --json")?;
                }
                if let Some(s) = service {
                    write!(f, " {s}")?;
                }
                if let Some(b) = backend {
                    write!(f, " {b}")?;
                }
                Ok(())
            }
            Command::SetWeight {
                service,
                backend,
                weight,
            } => write!(f, "set-weight {service} {backend} {weight}"),
            Command::LoadReport {
                service,
                backend,
                load,
            } => write!(f, "load-report {service} {backend} {load}"),
        }
    }
}

impl Command {
    /// Changes state (set-weight, drain, load-report): logged at info.
    pub fn is_action(&self) -> bool {
        matches!(self, Command::SetWeight { .. } | Command::LoadReport { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn lines_parse_to_commands_and_bad_words_are_named() {
        let b = "198.51.100.1:80".parse().unwrap();
        assert_eq!(Command::parse(" status "), Ok(Command::Status));
        assert_eq!(Command::parse("status --json"), Ok(Command::StatusJson));
        assert_eq!(
            Command::parse("drain web 198.51.100.1:80"),
            Ok(Command::SetWeight {
                service: "web".into(),
                backend: b,
                weight: 0
            })
        );
        assert_eq!(
            Command::parse("load-report web 198.51.100.1:80 250"),
            Ok(Command::LoadReport {
                service: "web".into(),
                backend: b,
                load: 250
            }),
            "parsed as given: the core refuses loads over 100"
        );
        assert!(Command::parse("set-weight web nowhere 1")
            .unwrap_err()
            .contains("\"nowhere\""));
        assert!(Command::parse("").unwrap_err().contains("try:"));
    }

    #[test]
    fn commands_print_as_the_lines_that_parse_back_to_them() {
        let b = "198.51.100.1:80".parse().unwrap();
        for c in [
            Command::Status,
            Command::StatusJson,
            Command::Metrics,
            Command::Stats { json: true },
            Command::Stats { json: false },
            Command::Connections {
                service: Some("web".into()),
                backend: Some(b),
                limit: 7,
                json: true,
            },
            Command::Connections {
                service: None,
                backend: None,
                limit: super::DEFAULT_CONNECTIONS_LIMIT,
                json: false,
            },
            Command::SetWeight {
                service: "web".into(),
                backend: b,
                weight: 3,
            },
            Command::LoadReport {
                service: "web".into(),
                backend: b,
                load: 75,
            },
        ] {
            assert_eq!(Command::parse(&c.to_string()), Ok(c.clone()), "{c}");
        }
        assert_eq!(
            Command::SetWeight {
                service: "web".into(),
                backend: b,
                weight: 0
            }
            .to_string(),
            "set-weight web 198.51.100.1:80 0"
        );
    }
}
