//! The plugin's FFI boundary with VPP: the functions the C shim calls
//! (`affinity_rs_*`, declared in `c-shim/affinity_shim.h`) and the plugin
//! registration VPP looks up. The data node's per-frame call is in
//! [`packet`]. Every entry point catches panics — a panic inside VPP would
//! kill the router — and turns them into a dropped packet or an error code
//! (`affinity_rc_t`, named in the shared header).

mod packet;

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
use affinity_forwarding_agent::wire::{self, IpProtocol, IPV4_UDP_HEADER_LEN};
use affinity_forwarding_agent::{Agent, AgentConfig, Counter, Disposition, PacketBuf, Worker};
use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::ffi::{c_char, c_void, CStr, CString};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

/// `vlib_plugin_registration_t` (vlib/unix/plugin.h), laid out as VPP's C.
#[repr(C, align(64))]
pub struct PluginRegistration {
    flags: u8,
    version: [u8; 64],
    version_required: [u8; 64],
    overrides: [u8; 256],
    early_init: *const c_char,
    description: *const c_char,
    load_after: *const c_char,
}

// SAFETY: the registration is immutable data read by VPP's loader.
unsafe impl Sync for PluginRegistration {}

const fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && i < N - 1 {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// What VPP's plugin loader finds with dlsym (a cdylib exports only Rust
/// symbols, so the registration lives here rather than in the C shim).
#[no_mangle]
#[used]
#[link_section = ".vlib_plugin_registration"]
pub static vlib_plugin_registration: PluginRegistration = PluginRegistration {
    flags: 0,
    version: padded(env!("AFFINITY_VPP_BUILD_VER")),
    version_required: [0; 64],
    overrides: [0; 256],
    early_init: std::ptr::null(),
    description: c"affinity: distributed NAT and L4 load balancing (forwarding agent)".as_ptr(),
    load_after: std::ptr::null(),
};

// The C error list is generated from the same counters (build.rs): same
// length, same order.
const _: () = assert!(sys::AFFINITY_N_ERROR as usize == N_COUNTERS);

struct State {
    agent: Arc<Agent>,
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

fn ns(now: f64) -> u64 {
    if now.is_finite() && now > 0.0 {
        (now * 1e9) as u64
    } else {
        0
    }
}

/// The agent's control address and port: the source of everything it sends.
fn control_source() -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(AGENT_ADDR.load(Relaxed))),
        LISTEN_PORT.load(Relaxed),
    )
}

/// Sends a UDP datagram from the agent's control address via ip4-lookup.
fn send_udp(to: SocketAddrV4, payload: &[u8]) {
    let src = control_source();
    let mut pkt = vec![0u8; IPV4_UDP_HEADER_LEN + payload.len()];
    if !wire::write_ipv4_udp_header(
        &mut pkt,
        src,
        to,
        payload.len(),
        IP_ID.fetch_add(1, Relaxed),
    ) {
        return;
    }
    pkt[IPV4_UDP_HEADER_LEN..].copy_from_slice(payload);
    send_ip(&pkt);
}

fn send_ip(pkt: &[u8]) {
    // SAFETY: FFI call; the shim copies `len` bytes from a valid slice into
    // a fresh vlib buffer before returning.
    unsafe { sys::affinity_shim_send_ip(pkt.as_ptr(), pkt.len() as u32) };
}

/// Sends the fragments a worker held until their first fragment's decision
/// came (`Worker::take_released`), as returned packets are sent.
fn send_released(w: &mut Worker) {
    for (pkt, d) in w.take_released() {
        match d {
            Disposition::Pass | Disposition::Forward(_) => send_ip(&pkt),
            Disposition::Punt { to, start } => send_udp(to, pkt.get(start..).unwrap_or_default()),
            Disposition::Drop(_) | Disposition::Consumed(_) => {}
        }
    }
}

fn flush(messages: Vec<(SocketAddrV4, Vec<u8>)>) {
    for (to, m) in messages {
        send_udp(to, &m);
    }
}

/// Starts the core from startup.conf's `affinity { ... }` and sends hellos
/// to the configured managers. Returns `AFFINITY_RC_OK`, or
/// `AFFINITY_RC_BAD_ARGUMENT` (NULL), `_KEY_FILE_UNREADABLE`,
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

/// Handles a service message received on the control port: replies and
/// packets a manager returned are sent through `affinity_shim_send_ip`.
/// `now` is `vlib_time_now` (seconds); `src_address` network order,
/// `src_port` host order.
///
/// # Safety
/// `payload` is NULL or points to `len` readable bytes, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_control(
    now: f64,
    payload: *const u8,
    len: u32,
    src_address: u32,
    src_port: u16,
) {
    let Some(st) = STATE.get() else { return };
    if payload.is_null() {
        return;
    }
    // SAFETY: `len` readable bytes, by this function's contract.
    let bytes = unsafe { std::slice::from_raw_parts(payload, len as usize) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let from = SocketAddrV4::new(Ipv4Addr::from(u32::from_be(src_address)), src_port);
        let t = ns(now);
        let out = st.agent.handle_control(t, from, bytes);
        flush(out.replies);
        let mut w = st.control.lock();
        for r in out.returned {
            const HEAD: usize = 512;
            let mut buf = vec![0u8; HEAD + r.packet.len()];
            buf[HEAD..].copy_from_slice(&r.packet);
            let len = r.packet.len();
            let mut p = PacketBuf::new(&mut buf, HEAD, len);
            match w.process_returned(t, &mut p, r.rank_limit) {
                Disposition::Pass | Disposition::Forward(_) => send_ip(&buf[HEAD..HEAD + len]),
                Disposition::Punt { to, start } => send_udp(to, &buf[start..HEAD + len]),
                Disposition::Drop(_) | Disposition::Consumed(_) => {}
            }
        }
        send_released(&mut w);
        flush(w.take_messages());
    }));
}

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

/// Makes `key` (1..=64 bytes) the signing key `key_id` with `algorithm`
/// (`affinity_api::AuthAlgorithm`, 2 = HMAC-SHA256) and requires
/// authentication from now on. Returns `AFFINITY_RC_OK`, or
/// `AFFINITY_RC_NOT_INITIALISED`, `_UNKNOWN_ALGORITHM`, `_BAD_ARGUMENT`
/// (NULL key or bad length).
///
/// # Safety
/// `key` is NULL or points to `len` readable bytes, valid for the call.
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_set_auth_key(
    key_id: u16,
    algorithm: u8,
    key: *const u8,
    len: u32,
) -> i32 {
    let Some(st) = STATE.get() else {
        return sys::AFFINITY_RC_NOT_INITIALISED;
    };
    let Some(alg) = AuthAlgorithm::from_u8(algorithm) else {
        return sys::AFFINITY_RC_UNKNOWN_ALGORITHM;
    };
    if key.is_null() || len == 0 || len > 64 {
        return sys::AFFINITY_RC_BAD_ARGUMENT;
    }
    // SAFETY: `len` (≤ 64) readable bytes, by this function's contract.
    let secret = unsafe { std::slice::from_raw_parts(key, len as usize) }.to_vec();
    let mut policy = st.agent.auth().clone();
    policy.keys.rotate_to(Key::new(key_id, alg, secret), 0, 60);
    policy.require = true;
    st.agent.set_auth(policy);
    sys::AFFINITY_RC_OK
}

/// The agent's control address (network order): the source of every
/// message it sends from now on.
#[no_mangle]
pub extern "C" fn affinity_rs_set_agent_address(address: u32) {
    AGENT_ADDR.store(address, Relaxed);
}

/// Calls `cb(ctx, row)` for up to `max` live fixed affinities (the API's
/// fixed dump); returns how many.
///
/// # Safety
/// `cb` is NULL or a function safe to call with `ctx` and a pointer to a
/// row valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_fixed_rows(
    now: f64,
    max: u32,
    cb: sys::affinity_fixed_cb,
    ctx: *mut c_void,
) -> u32 {
    let (Some(st), Some(cb)) = (STATE.get(), cb) else {
        return 0;
    };
    let rows = catch_unwind(AssertUnwindSafe(|| {
        st.agent.fixed_entries(ns(now), max as usize, |_| true)
    }))
    .unwrap_or_default();
    for r in &rows {
        let nat: affinity_api::NatAction = r.actions.nat.map(Into::into).unwrap_or_default();
        let row = sys::affinity_fixed_row_t {
            protocol: r.key.protocol,
            nat_flags: nat.flags,
            src_port: r.key.src_port,
            dst_port: r.key.dst_port,
            nat_src_port: nat.src_port,
            nat_dst_port: nat.dst_port,
            src_address: u32::from(r.key.src_addr).to_be(),
            dst_address: u32::from(r.key.dst_addr).to_be(),
            nat_src_address: u32::from(nat.src_addr).to_be(),
            nat_dst_address: u32::from(nat.dst_addr).to_be(),
            owner: u32::from(r.owner).to_be(),
            ttl_remaining_ds: r.expires_in_ds.clamp(0, u32::MAX as i64) as u32,
            packets: r.packets,
            bytes: r.bytes,
        };
        // SAFETY: by this function's contract; `row` outlives the call.
        unsafe { cb(ctx, &row) };
    }
    rows.len() as u32
}

/// Calls `cb(ctx, row)` for each live wildcard affinity (the API's
/// wildcard dump); returns how many.
///
/// # Safety
/// As for [`affinity_rs_fixed_rows`].
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_wildcard_rows(
    now: f64,
    cb: sys::affinity_wildcard_cb,
    ctx: *mut c_void,
) -> u32 {
    let (Some(st), Some(cb)) = (STATE.get(), cb) else {
        return 0;
    };
    let rows =
        catch_unwind(AssertUnwindSafe(|| st.agent.wildcard_entries(ns(now)))).unwrap_or_default();
    for w in &rows {
        let row = sys::affinity_wildcard_row_t {
            protocol: w.key.protocol,
            src_prefix_len: u32::from(w.src_mask).count_ones() as u8,
            dst_prefix_len: u32::from(w.dst_mask).count_ones() as u8,
            src_port: w.key.src_port,
            dst_port: w.key.dst_port,
            service_precedence: w.service_precedence,
            backup_precedence: w.backup_precedence,
            interest_mask: w.actions.interest.map_or(0, |i| i.mask),
            owner: u32::from(w.owner).to_be(),
            id: w.id,
            src_address: u32::from(w.key.src_addr).to_be(),
            dst_address: u32::from(w.key.dst_addr).to_be(),
            ttl_remaining_ds: w.expires_in_ds.clamp(0, u32::MAX as i64) as u32,
        };
        // SAFETY: by this function's contract; `row` outlives the call.
        unsafe { cb(ctx, &row) };
    }
    rows.len() as u32
}

/// `test affinity fill` (benchmarks, lab checks): installs up to
/// `n_addrs * n_ports` fixed TCP affinities, documented in
/// `affinity_shim.h`; returns how many were installed. The argument list
/// is the C declaration's (one CLI line's fields).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn affinity_rs_test_fill(
    now: f64,
    src_base: u32,
    n_addrs: u32,
    port_base: u16,
    n_ports: u32,
    dst: u32,
    dport: u16,
    nat_dst: u32,
    nat_dport: u16,
    forward: u8,
    forward_address: u32,
) -> u32 {
    let Some(st) = STATE.get() else { return 0 };
    catch_unwind(AssertUnwindSafe(|| {
        let actions = if forward != 0 {
            affinity_forwarding_agent::actions::ActionSet {
                dispatch_flags: affinity_api::dispatch::FORWARD,
                forward_addr: u32::from_be(forward_address),
                ..Default::default()
            }
        } else {
            let nat = affinity_api::NatAction {
                flags: affinity_api::NatAction::DST_ADDR | affinity_api::NatAction::DST_PORT,
                dst_addr: Ipv4Addr::from(u32::from_be(nat_dst)),
                dst_port: nat_dport,
                ..Default::default()
            };
            affinity_forwarding_agent::actions::ActionSet {
                nat: Some(nat.into()),
                ..Default::default()
            }
        };
        let mut n = 0;
        for a in 0..n_addrs {
            for p in 0..n_ports {
                let key = affinity_api::AffinityKey {
                    protocol: IpProtocol::Tcp.number(),
                    src_addr: Ipv4Addr::from(u32::from_be(src_base).wrapping_add(a)),
                    dst_addr: Ipv4Addr::from(u32::from_be(dst)),
                    src_port: port_base.wrapping_add(p as u16),
                    dst_port: dport,
                };
                if st
                    .agent
                    .install_fixed_local(ns(now), key, &actions, 86400)
                    .is_err()
                {
                    return n;
                }
                n += 1;
            }
        }
        n
    }))
    .unwrap_or(0)
}

/// Keeps the shim's object (its node, feature, CLI and API registrations,
/// all constructors) linked into the cdylib.
#[no_mangle]
pub extern "C" fn affinity_rs_shim_version() -> u32 {
    // SAFETY: FFI call without arguments.
    unsafe { sys::affinity_shim_version() }
}
