//! The timer process's work (main thread): the core's expiry and hold
//! timers, fragment upkeep of idle workers, and the advertised prefixes
//! kept in the FIB.

use super::send::{flush, send_released};
use super::{ns, sys, State, STATE};
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The core's timers (expiry, hold timeouts), at `now` (`vlib_time_now`,
/// seconds), run by the timer process on the main thread: the agent's
/// tick; fragment upkeep of every thread's worker (held fragments of an
/// idle worker released or expired, `Worker::poll_fragments`); the
/// advertised prefixes brought into the FIB. Returns when they are next
/// needed, in the same clock ([`Agent::poll_timeout`]), or -1 when nothing
/// is scheduled (or before init): the timer process sleeps until then.
#[no_mangle]
pub extern "C" fn affinity_rs_tick(now: f64) -> f64 {
    let Some(st) = STATE.get() else { return -1.0 };
    catch_unwind(AssertUnwindSafe(|| {
        let t = ns(now);
        flush(st.agent.tick(t));
        // Fragment state is released or expired within seconds
        // (fragments::TIMEOUT_NS, 2 s), a deadline poll_timeout does not
        // know: while any is kept, come back in FRAGMENT_POLL_S.
        let mut soon = false;
        for thread in &st.workers {
            match thread.try_lock() {
                Some(mut ts) => soon |= ts.poll_fragments(t),
                // A worker busy with a frame does its own upkeep; look
                // again soon.
                None => soon = true,
            }
        }
        {
            let mut w = st.control.lock();
            w.poll_fragments(t);
            send_released(&mut w);
            flush(w.take_messages());
            soon |= w.holds_fragments();
        }
        // Wildcards expire without a deadline of their own here: while a
        // prefix is advertised, look again within ADVERTISE_POLL_S.
        let advertising = sync_advertised(st, t);
        let due = st.agent.poll_timeout().map(|due_ns| due_ns as f64 / 1e9);
        let cap = if soon {
            Some(now + FRAGMENT_POLL_S)
        } else if advertising {
            Some(now + ADVERTISE_POLL_S)
        } else {
            None
        };
        match (due, cap) {
            (Some(d), Some(c)) => d.min(c),
            (d, c) => d.or(c).unwrap_or(-1.0),
        }
    }))
    .unwrap_or(-1.0)
}

/// How soon the timer process looks again while fragments are held
/// (seconds): well inside their 2 s timeout.
const FRAGMENT_POLL_S: f64 = 0.2;

/// How soon it looks again while prefixes are advertised (seconds): how
/// late a withdrawal may come after the wildcard's expiry.
const ADVERTISE_POLL_S: f64 = 1.0;

/// Brings the FIB's entries of the plugin's source to the prefixes live
/// wildcards advertise now ([`Agent::advertised_prefixes`], seed FIG 10H):
/// new ones added, gone ones (wildcard deleted or expired) withdrawn.
/// Returns whether any prefix is advertised.
fn sync_advertised(st: &State, now_ns: u64) -> bool {
    let want: BTreeSet<(u32, u8)> = st
        .agent
        .advertised_prefixes(now_ns)
        .into_iter()
        .map(|(addr, mask)| {
            let m = u32::from(mask);
            ((u32::from(addr) & m).to_be(), m.count_ones() as u8)
        })
        .collect();
    let mut have = st.advertised.lock();
    for &(a, l) in have.difference(&want) {
        // SAFETY: FFI call with plain values, on the main thread (the timer
        // process), as the shim requires.
        unsafe { sys::affinity_shim_advertise(a, l, 0) };
    }
    for &(a, l) in want.difference(&have) {
        // SAFETY: as above.
        unsafe { sys::affinity_shim_advertise(a, l, 1) };
    }
    *have = want;
    !have.is_empty()
}
