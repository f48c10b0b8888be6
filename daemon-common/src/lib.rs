//! What the two affinity daemons, `affinity-manager` and `affinity-agent`
//! (the host forwarding agent), share outside their cores, written once:
//! - [`init_logging`]: logs to stderr at `RUST_LOG`;
//! - [`ask`]: one command line to a running daemon's Unix control socket,
//!   its answer back;
//! - [`print_answer`]: that answer on stdout, and the exit code a command
//!   run gives;
//! - [`udp`]: a service-message socket's receive buffer and the kernel's
//!   drops on it.
//!
//! No I/O happens here beyond those; the daemons' cores know nothing of it.

pub mod udp;

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

/// Logs to stderr at `RUST_LOG` (default `info`), with ANSI colours only
/// when stderr is a terminal (a log file or journald gets plain text).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Sends `line` (one command, a newline added) to the control socket at
/// `path`, closes the sending half and reads the whole answer (UTF-8
/// text). Errors: the socket's I/O errors; one from connecting names the
/// path and asks whether the `daemon` ("manager", "agent") is running.
pub fn ask(path: &Path, line: &str, daemon: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is the {daemon} running?)", path.display()),
        )
    })?;
    s.write_all(format!("{line}\n").as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Prints `answer` (from [`ask`]) on stdout; its exit code: 1 when asking
/// failed, the answer is an `error:` line or stdout failed, else success.
/// Errors go to stderr after `program: `. A reader that closes the pipe
/// early (`... | head -1`) is success, not a failure: the print does not
/// panic on EPIPE as `print!` would.
pub fn print_answer(answer: std::io::Result<String>, program: &str) -> ExitCode {
    let s = match answer {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("{program}: {e}");
            ExitCode::from(1)
        }
        _ if s.starts_with("error:") => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::ask;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn ask_sends_one_line_and_reads_the_whole_answer() {
        let path = std::env::temp_dir().join(format!("affinity-ask-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            (&s).write_all(format!("got {line}more\n").as_bytes())
                .unwrap();
        });
        assert_eq!(ask(&path, "status", "agent").unwrap(), "got status\nmore\n");
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
        let e = ask(&path, "status", "manager").unwrap_err();
        assert!(e.to_string().contains("(is the manager running?)"), "{e}");
    }
}
