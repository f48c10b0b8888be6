#![no_main]
//! The data-path fuzz target: the harness is `datapath_harness::run` (shared
//! with the `datapath_bench` example loop that measures runs per second).
use libfuzzer_sys::fuzz_target;

#[path = "datapath_harness.rs"]
mod datapath_harness;

fuzz_target!(|data: &[u8]| datapath_harness::run(data));
