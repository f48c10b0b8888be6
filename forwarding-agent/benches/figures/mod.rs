//! The tail the forwarding-agent benches share: their figures, printed.

use std::io::Write;

/// Prints each figure as a `name value unit` line (value to two decimals)
/// and appends the same lines to `target/bench-figures.txt` at the
/// workspace root; a file that cannot be opened or written is skipped, the
/// printed lines still stand.
pub fn report(figures: Vec<(String, f64, &str)>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-figures.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok();
    for (n, v, u) in figures {
        let line = format!("{n} {v:.2} {u}");
        println!("{line}");
        if let Some(f) = f.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }
}
