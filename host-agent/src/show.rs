//! Talks to a running agent's status socket; the text itself comes from
//! `affinity_forwarding_agent::show`, the renderer `vppctl show affinity` uses too.

use std::path::Path;

/// Asks a running agent.
pub fn client(path: &Path, cmd: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is the agent running?)", path.display()),
        )
    })?;
    c.write_all(format!("{cmd}\n").as_bytes())?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}
