//! The plugin's FFI boundary with VPP: the functions the C shim calls
//! (`affinity_rs_*`, declared in `c-shim/affinity_shim.h`) and the plugin
//! registration VPP looks up. Here: the shared state and its start from
//! startup.conf; the data node's per-frame call is in `packet`, the
//! control port's messages in `control`, the timer process's work in
//! `timers`, `show` and the counters in `show`, the API's table dumps
//! in `dump`, what the agent sends in `send` and the loader's record
//! in `registration`. Every entry point catches panics — a panic inside
//! VPP would kill the router — and turns them into a dropped packet or an
//! error code (`affinity_rc_t`, named in the shared header).

mod control;
mod dump;
mod packet;
mod registration;
mod send;
mod show;
mod timers;

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unused_imports
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/shim.rs"));
}

use affinity_api::{AuthAlgorithm, AuthPolicy, Key, AGENT_PORT};
use affinity_forwarding_agent::config::{read_key_file, KeyFileError};
use affinity_forwarding_agent::counters::{SharedCounters, N_COUNTERS};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Worker};
use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use send::send_udp;
use std::collections::BTreeSet;
use std::ffi::{c_char, CStr, CString};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

// The C error list is generated from the same counters (build.rs): same
// length, same order.
const _: () = assert!(sys::AFFINITY_N_ERROR as usize == N_COUNTERS);

struct State {
    agent: Arc<Agent>,
    /// Where a packet's fields lie in a `vlib_buffer_t` (the shim's
    /// measure, checked at init).
    layout: packet::BufferLayout,
    /// One per VPP thread (main and workers), by thread index.
    workers: Vec<Mutex<packet::ThreadState>>,
    control: Mutex<Worker>,
    /// What the shim counts itself (its own drops, bad control packets).
    shim_counters: Arc<SharedCounters>,
    counter_names: Vec<CString>,
    /// Prefixes installed in the FIB (`affinity_shim_advertise`), as
    /// (address network order masked, length): the timer process's only.
    advertised: Mutex<BTreeSet<(u32, u8)>>,
}

static STATE: OnceCell<State> = OnceCell::new();
static AGENT_ADDR: AtomicU32 = AtomicU32::new(0);
static LISTEN_PORT: AtomicU16 = AtomicU16::new(AGENT_PORT);
static IP_ID: AtomicU16 = AtomicU16::new(1);

/// `vlib_time_now` (seconds) in the core's clock (nanoseconds); 0 for a
/// value that is not a positive finite number.
fn ns(now: f64) -> u64 {
    if now.is_finite() && now > 0.0 {
        (now * 1e9) as u64
    } else {
        0
    }
}

/// Starts the core from startup.conf's `affinity { ... }` and sends hellos
/// to the configured managers. Returns `AFFINITY_RC_OK`, or
/// `AFFINITY_RC_BAD_ARGUMENT` (NULL, or a buffer layout the data path
/// cannot read), `_KEY_FILE_UNREADABLE`,
/// `_UNKNOWN_ACTION` (a `disable-action` name), `_ALREADY_INITIALISED`,
/// `_PANIC`.
///
/// # Safety
/// `cfg` is NULL or points to a valid `affinity_config_t` whose
/// `auth_key_file` is NULL or NUL-terminated and whose `disabled_actions`
/// is NULL or NUL-separated names ending with an empty one; all stay valid
/// for the call.
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_init(cfg: *const sys::affinity_config_t) -> i32 {
    catch_unwind(|| {
        // SAFETY: NULL or valid, by this function's contract.
        let Some(c) = (unsafe { cfg.as_ref() }) else {
            return sys::AFFINITY_RC_BAD_ARGUMENT;
        };
        let Some(layout) = packet::BufferLayout::new(&c.buffer_layout) else {
            return sys::AFFINITY_RC_BAD_ARGUMENT;
        };
        let agent_addr = Ipv4Addr::from(u32::from_be(c.agent_address));
        AGENT_ADDR.store(c.agent_address, Relaxed);
        LISTEN_PORT.store(c.listen_port, Relaxed);
        let mut auth = AuthPolicy::open();
        if !c.auth_key_file.is_null() {
            // SAFETY: NUL-terminated vector owned by the shim.
            let path = unsafe { CStr::from_ptr(c.auth_key_file) }
                .to_string_lossy()
                .into_owned();
            // Bounded and non-empty, as the host agent's --key-file.
            match read_key_file(std::path::Path::new(&path)) {
                Ok(k) => {
                    auth = AuthPolicy::with_key(Key::new(
                        c.auth_key_id.max(1),
                        AuthAlgorithm::HmacSha256,
                        k,
                    ));
                }
                Err(KeyFileError::Io(_)) => return sys::AFFINITY_RC_KEY_FILE_UNREADABLE,
                Err(_) => return sys::AFFINITY_RC_KEY_FILE_INVALID,
            }
        }
        let mut disabled_actions = Vec::new();
        if !c.disabled_actions.is_null() {
            let mut p = c.disabled_actions;
            loop {
                // SAFETY: the shim passes NUL-separated names ending with an
                // empty one, in a vector it keeps for the process's life.
                let name = unsafe { CStr::from_ptr(p) };
                if name.is_empty() {
                    break;
                }
                match affinity_forwarding_agent::actions::action_segment_by_name(
                    &name.to_string_lossy(),
                ) {
                    Some(t) => disabled_actions.push(t),
                    None => return sys::AFFINITY_RC_UNKNOWN_ACTION,
                }
                // SAFETY: `name` is followed by at least its NUL and the
                // terminating empty name, inside the same vector.
                p = unsafe { p.add(name.to_bytes().len() + 1) };
            }
        }
        let config = AgentConfig {
            disabled_actions,
            fixed_capacity: c.fixed_table_size.max(1024) as usize,
            action_capacity: (c.fixed_table_size as usize / 4).max(65536),
            wildcard_capacity: c.wildcard_table_size.max(16) as usize,
            agent_addr,
            agent_name: "vpp-affinity".into(),
            instance_id: c.agent_address ^ 0x5650_5000,
            auth,
            // Managers renew only flows reported active (issue 11);
            // `activity-report-interval-ms` (~0: not given).
            activity_report_interval_ms: if c.activity_report_interval_ms == u32::MAX {
                10_000
            } else {
                u64::from(c.activity_report_interval_ms)
            },
            // `allowed-manager ADDR`: none given, any source (trusted LAN).
            allowed_managers: (c.n_allowed_managers > 0).then(|| {
                c.allowed_managers[..(c.n_allowed_managers as usize).min(8)]
                    .iter()
                    .map(|a| Ipv4Addr::from(u32::from_be(*a)))
                    .collect()
            }),
            ..Default::default()
        };
        let agent = Agent::new(config);
        // `warm-up-ms` (~0: not given), started before the hellos go out:
        // their answers end it (as the host agent does).
        let warm_up_ms = match c.warm_up_ms {
            u32::MAX => affinity_forwarding_agent::DEFAULT_WARM_UP_MS,
            ms => u64::from(ms),
        };
        let managers: Vec<Ipv4Addr> = c.managers[..(c.n_managers as usize).min(8)]
            .iter()
            .map(|m| Ipv4Addr::from(u32::from_be(*m)))
            .collect();
        agent.start_warm_up(ns(c.start_time), warm_up_ms, &managers);
        let n = c.n_threads.max(1) as usize;
        let state = State {
            layout,
            workers: (0..n)
                .map(|_| Mutex::new(packet::ThreadState::new(agent.worker())))
                .collect(),
            control: Mutex::new(agent.worker()),
            shim_counters: agent.external_counters(),
            advertised: Mutex::new(BTreeSet::new()),
            counter_names: Counter::ALL
                .iter()
                .map(|c| CString::new(c.name()).unwrap_or_default())
                .collect(),
            agent,
        };
        let hello = state.agent.build_hello();
        for m in &c.managers[..(c.n_managers as usize).min(8)] {
            send_udp(
                SocketAddrV4::new(Ipv4Addr::from(u32::from_be(*m)), affinity_api::MANAGER_PORT),
                &hello,
            );
        }
        if STATE.set(state).is_err() {
            return sys::AFFINITY_RC_ALREADY_INITIALISED;
        }
        sys::AFFINITY_RC_OK
    })
    .unwrap_or(sys::AFFINITY_RC_PANIC)
}

/// Checks startup.conf's `auth-key-file` before VPP starts (its config
/// function): the same bounded read as at init ([`read_key_file`], at most
/// 4096 bytes, not empty), so a bad key file stops VPP instead of leaving
/// it running without a core. Returns `AFFINITY_RC_OK`,
/// `AFFINITY_RC_KEY_FILE_UNREADABLE`, `_KEY_FILE_INVALID` (empty or too
/// long) or `_BAD_ARGUMENT` (NULL).
///
/// # Safety
/// `path` is NULL or NUL-terminated, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_check_key_file(path: *const c_char) -> i32 {
    if path.is_null() {
        return sys::AFFINITY_RC_BAD_ARGUMENT;
    }
    // SAFETY: NUL-terminated, by this function's contract.
    let path = unsafe { CStr::from_ptr(path) }
        .to_string_lossy()
        .into_owned();
    catch_unwind(|| match read_key_file(std::path::Path::new(&path)) {
        Ok(_) => sys::AFFINITY_RC_OK,
        Err(KeyFileError::Io(_)) => sys::AFFINITY_RC_KEY_FILE_UNREADABLE,
        Err(_) => sys::AFFINITY_RC_KEY_FILE_INVALID,
    })
    .unwrap_or(sys::AFFINITY_RC_PANIC)
}
