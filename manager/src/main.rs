//! `affinity-manager`: run the daemon, check a configuration, or talk to a
//! running daemon. Command line by clap: `--help` and `--version` exit 0,
//! a bad command line prints the usage and exits 2.

use affinity_manager::config::Config;
use affinity_manager::daemon::Daemon;
use affinity_manager::Command;
use clap::{Parser, Subcommand};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The affinity service manager: chooses backends for new flows and
/// installs fixed affinities on the forwarding agents.
#[derive(Debug, Parser)]
#[command(
    name = "affinity-manager",
    version,
    after_help = "Without a command, runs the manager (--config). Logs go to stderr; RUST_LOG=debug shows dropped input.\nSIGHUP reloads the configuration; SIGTERM/SIGINT delete this manager's wildcards and exit."
)]
struct Cli {
    /// Configuration file: run the manager, or find the control socket.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE, each error as FILE:LINE:COLUMN, and exit (0 ok, 2 errors).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Control socket of a running manager [default: the configuration's, else /run/affinity-manager.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// Commands to a running manager (over its control socket).
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Services, backends, agents and counters.
    Status {
        /// Machine-readable: one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The Prometheus text exposition.
    Metrics,
    /// Per-service and per-backend traffic over all agents (activity
    /// reports): connections, packets, bytes, rates (ipvsadm -Ln --stats --rate).
    Stats {
        /// Machine-readable: one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Flows placed: both sides' 5-tuples, backend, state, age, expiry, agents (ipvsadm -Lnc).
    Connections {
        /// Only this service's flows.
        service: Option<String>,
        /// Only flows on this backend (ADDR:PORT) of the service.
        backend: Option<SocketAddrV4>,
        /// List at most N flows (oldest first).
        #[arg(long, value_name = "N", default_value_t = affinity_manager::core::DEFAULT_CONNECTIONS_LIMIT)]
        limit: usize,
        /// Machine-readable: one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set a backend's weight (0 drains: existing flows stay).
    SetWeight {
        service: String,
        backend: SocketAddrV4,
        weight: u32,
    },
    /// Drain a backend (weight 0): no new flows, existing flows stay.
    Drain {
        service: String,
        backend: SocketAddrV4,
    },
    /// Feedback algorithm: the backend's load in percent (0-100).
    LoadReport {
        service: String,
        backend: SocketAddrV4,
        #[arg(value_parser = clap::value_parser!(u32).range(0..=100))]
        load: u32,
    },
}

impl Cmd {
    fn command(self) -> Command {
        match self {
            Cmd::Status { json: false } => Command::Status,
            Cmd::Status { json: true } => Command::StatusJson,
            Cmd::Metrics => Command::Metrics,
            Cmd::Stats { json } => Command::Stats { json },
            Cmd::Connections {
                service,
                backend,
                limit,
                json,
            } => Command::Connections {
                service,
                backend,
                limit,
                json,
            },
            Cmd::SetWeight {
                service,
                backend,
                weight,
            } => Command::SetWeight {
                service,
                backend,
                weight,
            },
            Cmd::Drain { service, backend } => Command::SetWeight {
                service,
                backend,
                weight: 0,
            },
            Cmd::LoadReport {
                service,
                backend,
                load,
            } => Command::LoadReport {
                service,
                backend,
                load,
            },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        return match Config::load(&path) {
            Ok(c) => {
                println!("{}: ok ({} services)", path.display(), c.services.len());
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for e in errs {
                    eprintln!("{}", e.located(&path));
                }
                ExitCode::from(2)
            }
        };
    }
    if let Some(cmd) = cli.command {
        let path = cli
            .socket
            .or_else(|| {
                cli.config
                    .as_ref()
                    .and_then(|c| Config::load(c).ok())
                    .map(|c| c.manager.control_socket)
            })
            .unwrap_or_else(|| PathBuf::from("/run/affinity-manager.sock"));
        let answer = affinity_daemon_common::ask(&path, &cmd.command().to_string(), "manager");
        return affinity_daemon_common::print_answer(answer, "affinity-manager");
    }
    let Some(path) = cli.config else {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let _ = cmd
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "nothing to do: give --config FILE to run, --check-config FILE, or a command",
            )
            .print();
        return ExitCode::from(2);
    };
    affinity_daemon_common::init_logging();
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(errs) => {
            for e in errs {
                eprintln!("{}", e.located(&path));
            }
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone());
    let mut d = match Daemon::bind(cfg, Some(path.clone())) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("affinity-manager: {e}");
            return ExitCode::from(1);
        }
    };
    let signals = [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ];
    if let Err(e) = d.wake_on_signals(&signals) {
        eprintln!("affinity-manager: signals: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = d.start_services(&stop) {
        eprintln!("affinity-manager: {e}");
        return ExitCode::from(1);
    }
    let cfg = d.core().config();
    let listen = d
        .local_addr()
        .map_or(cfg.manager.listen.to_string(), |a| a.to_string());
    let metrics = cfg
        .manager
        .metrics
        .map_or("off".to_string(), |a| a.to_string());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        %listen,
        control = %cfg.manager.control_socket.display(),
        %metrics,
        services = cfg.services.len(),
        "affinity-manager running"
    );
    d.run(&stop, &reload);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
