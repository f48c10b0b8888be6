//! The tail every bench shares: its figures, printed and kept. The
//! forwarding-agent benches declare it as their `figures` module; the
//! manager's bench includes this same file by path (one writer of
//! target/bench-figures.txt, not one per crate).

use std::io::Write;

/// Prints each figure as a `name value unit` line (value to `decimals`
/// places: 2 for the agent's ns per packet, 1 for the manager's figures)
/// and appends the same lines to `target/bench-figures.txt` at the
/// workspace root; a file that cannot be opened or written is skipped, the
/// printed lines still stand.
pub fn report(figures: Vec<(String, f64, &str)>, decimals: usize) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-figures.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok();
    for (n, v, u) in figures {
        let line = format!("{n} {v:.decimals$} {u}");
        println!("{line}");
        if let Some(f) = f.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }
}
