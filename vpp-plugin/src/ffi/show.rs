//! `show affinity ...` and the core's counters as the CLI, the API and the
//! node's error counters read them.

use super::{ns, STATE};
use affinity_forwarding_agent::Counter;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Counts `n` events the shim decided itself into the core's counter
/// `error` (an `affinity_error_t`): an unresolved forward address, a
/// control packet without usable headers. Unknown indices are ignored.
#[no_mangle]
pub extern "C" fn affinity_rs_count(error: u32, n: u32) {
    if let (Some(st), Some(&c)) = (STATE.get(), Counter::ALL.get(error as usize)) {
        st.shim_counters.add(c, u64::from(n));
    }
}

/// `show affinity ARGS`: the text the core renders, NUL-terminated, to be
/// freed with [`affinity_rs_free`]; NULL if it cannot be allocated.
///
/// # Safety
/// `args` is NULL or a NUL-terminated string, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_show(now: f64, args: *const c_char) -> *mut c_char {
    let text = catch_unwind(AssertUnwindSafe(|| {
        let Some(st) = STATE.get() else {
            return String::from("affinity: not initialised\n");
        };
        let args = if args.is_null() {
            String::new()
        } else {
            // SAFETY: NUL-terminated, by this function's contract.
            unsafe { CStr::from_ptr(args) }
                .to_string_lossy()
                .into_owned()
        };
        affinity_forwarding_agent::show::render(&st.agent, ns(now), &args)
    }))
    .unwrap_or_else(|_| String::from("affinity: internal error\n"));
    CString::new(text.replace('\0', " ")).map_or(std::ptr::null_mut(), CString::into_raw)
}

/// Frees a text returned by [`affinity_rs_show`].
///
/// # Safety
/// `s` is NULL or a pointer returned by `affinity_rs_show`, not freed yet.
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from CString::into_raw in affinity_rs_show.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// How many counters the core keeps (`AFFINITY_N_ERROR`).
#[no_mangle]
pub extern "C" fn affinity_rs_counter_count() -> u32 {
    Counter::ALL.len() as u32
}

/// Counter `i`'s name (static, NUL-terminated; "" out of range or before
/// init).
#[no_mangle]
pub extern "C" fn affinity_rs_counter_name(i: u32) -> *const c_char {
    STATE
        .get()
        .and_then(|s| s.counter_names.get(i as usize))
        .map_or(c"".as_ptr(), |c| c.as_ptr())
}

/// Counter `i`'s value since the last `clear affinity stats` (0 out of
/// range or before init).
#[no_mangle]
pub extern "C" fn affinity_rs_counter_value(i: u32) -> u64 {
    match (STATE.get(), Counter::ALL.get(i as usize)) {
        (Some(s), Some(c)) => s.agent.counter(*c),
        _ => 0,
    }
}
