//! `affinity-manager`: run the daemon, check a configuration, or talk to a
//! running daemon.

use affinity_manager::config::Config;
use affinity_manager::daemon::{client, Daemon};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const USAGE: &str = "usage:
  affinity-manager --config FILE                 run the manager
  affinity-manager --check-config FILE           validate FILE and explain each error
  affinity-manager [--socket PATH | --config FILE] status
  affinity-manager [--socket PATH | --config FILE] metrics
  affinity-manager [--socket PATH | --config FILE] set-weight SERVICE BACKEND WEIGHT
  affinity-manager [--socket PATH | --config FILE] drain SERVICE BACKEND
  affinity-manager [--socket PATH | --config FILE] load-report SERVICE BACKEND LOAD(0-100)
Logs go to stderr; RUST_LOG=debug shows dropped input.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config: Option<PathBuf> = None;
    let mut socket: Option<PathBuf> = None;
    let mut check: Option<PathBuf> = None;
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--config" | "-c" if i + 1 < args.len() => {
                config = Some(args[i + 1].clone().into());
                i += 1;
            }
            "--socket" if i + 1 < args.len() => {
                socket = Some(args[i + 1].clone().into());
                i += 1;
            }
            "--check-config" if i + 1 < args.len() => {
                check = Some(args[i + 1].clone().into());
                i += 1;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            a => rest.push(a.to_string()),
        }
        i += 1;
    }
    if let Some(path) = check {
        return match Config::load(&path) {
            Ok(c) => {
                println!("{}: ok ({} services)", path.display(), c.services.len());
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for e in errs {
                    eprintln!("{}:{e}", path.display());
                }
                ExitCode::from(2)
            }
        };
    }
    if !rest.is_empty() {
        let path = socket
            .or_else(|| {
                config
                    .as_ref()
                    .and_then(|c| Config::load(c).ok())
                    .map(|c| c.manager.control_socket)
            })
            .unwrap_or_else(|| PathBuf::from("/run/affinity-manager.sock"));
        return match client(&path, &rest.join(" ")) {
            Ok(s) => {
                print!("{s}");
                if s.starts_with("error:") {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("affinity-manager: {e}");
                ExitCode::from(1)
            }
        };
    }
    let Some(path) = config else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(errs) => {
            for e in errs {
                eprintln!("{}:{e}", path.display());
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
            eprintln!("affinity-manager: bind: {e}");
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
    tracing::info!(config = %path.display(), listen = ?d.local_addr().ok(), "affinity-manager running");
    d.run(&stop, &reload);
    ExitCode::SUCCESS
}
