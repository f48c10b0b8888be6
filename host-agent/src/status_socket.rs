//! The status socket: one command line in, the answer out (`show` text or
//! `--json`), with timeouts, a line limit and no echo of the input.

use crate::report;
use affinity_forwarding_agent::Agent;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// Longest status-socket command line (bytes).
const MAX_STATUS_LINE: u64 = 1024;

/// Answers one status-socket connection: one UTF-8 command line of at most
/// [`MAX_STATUS_LINE`] bytes within 5 s. Anything else gets a fixed error
/// (no echo of the input, and never the status by default).
pub(crate) fn serve_status(agent: &Agent, conn: &std::os::unix::net::UnixStream, now: u64) {
    use std::io::Read;
    let timeout = Some(Duration::from_secs(5));
    let _ = conn.set_read_timeout(timeout);
    let _ = conn.set_write_timeout(timeout);
    let mut raw = Vec::new();
    let ok = BufReader::new(conn.take(MAX_STATUS_LINE))
        .read_until(b'\n', &mut raw)
        .is_ok();
    let complete = raw.last() == Some(&b'\n') || (raw.len() as u64) < MAX_STATUS_LINE;
    let line = std::str::from_utf8(&raw)
        .ok()
        .filter(|_| complete)
        .map(str::trim);
    let text = match line {
        Some(l) if ok && !l.is_empty() && l.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.split_last() {
                Some((&"--json", rest)) => report::json(agent, now, rest),
                _ => affinity_forwarding_agent::show::render(agent, now, l),
            }
        }
        _ => "error: expected one command line (status | tables | fixed | wildcard | managers | stats)\n".into(),
    };
    let mut w = conn;
    let _ = w.write_all(text.as_bytes());
    // Closing with unread input would reset the connection and lose the
    // answer: end our side, then discard a bounded rest of the input.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = std::io::copy(&mut conn.take(1 << 16), &mut std::io::sink());
}
