//! Runs per second of the data-path harness without libFuzzer (and without
//! coverage instrumentation): every file of the corpus directories given,
//! round after round, for about `AFFINITY_BENCH_SECS` seconds (default 10).
//! `cargo run --release --manifest-path fuzz/Cargo.toml --example
//! datapath_bench -- fuzz/seeds/datapath`. An example, not a bin: cargo-fuzz
//! builds and lists every bin as a fuzz target.
use std::time::{Duration, Instant};

#[path = "../fuzz_targets/datapath_harness.rs"]
mod datapath_harness;

fn main() {
    let mut inputs = Vec::new();
    for dir in std::env::args().skip(1) {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            eprintln!("datapath_bench: cannot read {dir}");
            std::process::exit(2);
        };
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                inputs.push(b);
            }
        }
    }
    if inputs.is_empty() {
        eprintln!("usage: datapath_bench CORPUS_DIR...");
        std::process::exit(2);
    }
    let secs = std::env::var("AFFINITY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    let limit = Duration::from_secs(secs);
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < limit {
        for i in &inputs {
            datapath_harness::run(i);
        }
        runs += inputs.len() as u64;
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "{runs} runs of {} inputs in {t:.2} s: {:.0} runs/s ({:.1} M per hour)",
        inputs.len(),
        runs as f64 / t,
        runs as f64 / t * 3600.0 / 1e6
    );
}
