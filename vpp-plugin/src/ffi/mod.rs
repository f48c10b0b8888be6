//! The plugin's FFI boundary with VPP: the functions the C shim calls
//! (`affinity_rs_*`) and the plugin registration VPP looks up. Every entry
//! point catches panics — a panic inside VPP would kill the router — and
//! turns them into a dropped packet or an error code.

#![allow(clippy::missing_safety_doc)]

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/shim.rs"));
}

use affinity_api::{AuthAlgorithm, AuthPolicy, Key, AGENT_PORT};
use affinity_forwarding_agent::wire;
use affinity_forwarding_agent::{
    matched, Agent, AgentConfig, Counter, Disposition, PacketBuf, Worker,
};
use once_cell::sync::OnceCell;
use parking_lot::Mutex;
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

struct State {
    agent: Arc<Agent>,
    workers: Vec<Mutex<Worker>>,
    control: Mutex<Worker>,
    counter_names: Vec<CString>,
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
    let mut pkt = vec![0u8; 28 + payload.len()];
    if !wire::write_ipv4_udp_header(
        &mut pkt,
        src,
        to,
        payload.len(),
        IP_ID.fetch_add(1, Relaxed),
    ) {
        return;
    }
    pkt[28..].copy_from_slice(payload);
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
            Disposition::Drop(_) | Disposition::Consumed => {}
        }
    }
}

fn flush(messages: Vec<(SocketAddrV4, Vec<u8>)>) {
    for (to, m) in messages {
        send_udp(to, &m);
    }
}

#[no_mangle]
pub unsafe extern "C" fn affinity_rs_init(cfg: *const sys::affinity_config_t) -> i32 {
    catch_unwind(|| {
        // SAFETY: the shim passes a pointer to its static config.
        let Some(c) = (unsafe { cfg.as_ref() }) else {
            return -1;
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
            match std::fs::read(&path) {
                Ok(k) => {
                    let k = k.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(k);
                    auth = AuthPolicy::with_key(Key::new(
                        c.auth_key_id.max(1),
                        AuthAlgorithm::HmacSha256,
                        k,
                    ));
                }
                Err(_) => return -2,
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
                    None => return -5,
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
            ..Default::default()
        };
        let agent = Agent::new(config);
        let n = c.n_threads.max(1) as usize;
        let state = State {
            workers: (0..n).map(|_| Mutex::new(agent.worker())).collect(),
            control: Mutex::new(agent.worker()),
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
            return -3;
        }
        0
    })
    .unwrap_or(-4)
}

#[no_mangle]
pub unsafe extern "C" fn affinity_rs_process(
    thread_index: u32,
    now: f64,
    pkts: *mut sys::affinity_pkt_t,
    n: u32,
) {
    let Some(st) = STATE.get() else { return };
    if pkts.is_null() || n == 0 {
        return;
    }
    // SAFETY: the shim passes an array of `n` initialised descriptors.
    let descs = unsafe { std::slice::from_raw_parts_mut(pkts, n as usize) };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let Some(worker) = st.workers.get(thread_index as usize) else {
            return;
        };
        let mut w = worker.lock();
        let mut bufs: Vec<PacketBuf<'_>> = descs
            .iter()
            .map(|d| {
                // SAFETY: a vlib buffer's pre-data area and data area are one
                // contiguous allocation: `headroom` bytes before `data` and
                // `len` bytes after it belong to this buffer, which this
                // thread owns for the duration of the call.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(
                        d.data.sub(d.headroom as usize),
                        (d.headroom + d.len) as usize,
                    )
                };
                PacketBuf::new(buf, d.headroom as usize, d.len as usize)
            })
            .collect();
        let mut out = vec![Disposition::Pass; bufs.len()];
        w.process_batch(ns(now), &mut bufs, &mut out);
        for (i, (d, p)) in descs.iter_mut().zip(bufs.iter_mut()).enumerate() {
            let m = w.matched().get(i).copied().unwrap_or(0);
            let bit = |on: bool, flag: u32| if on { flag } else { 0 };
            d.flags = bit(
                m & matched::FIXED != 0,
                sys::affinity_action_flag_AFFINITY_TRACE_FIXED,
            ) | bit(
                m & matched::WILDCARD != 0,
                sys::affinity_action_flag_AFFINITY_TRACE_WILDCARD,
            ) | bit(
                m & matched::NAT != 0,
                sys::affinity_action_flag_AFFINITY_TRACE_NAT,
            );
            match out[i] {
                Disposition::Pass => d.next = sys::affinity_next_AFFINITY_NEXT_CONTINUE,
                Disposition::Forward(to) => {
                    d.next = sys::affinity_next_AFFINITY_NEXT_FORWARD;
                    d.forward_address = u32::from(to).to_be();
                    d.flags |= sys::affinity_action_flag_AFFINITY_TRACE_FORWARD;
                }
                Disposition::Drop(_) => {
                    d.next = sys::affinity_next_AFFINITY_NEXT_DROP;
                    d.flags |= sys::affinity_action_flag_AFFINITY_TRACE_DROP;
                }
                Disposition::Consumed => {
                    d.next = sys::affinity_next_AFFINITY_NEXT_DROP;
                    d.flags |= sys::affinity_action_flag_AFFINITY_TRACE_CONSUMED;
                }
                Disposition::Punt { to, start } => {
                    let end = p.start + p.len;
                    let src = control_source();
                    if start >= 28
                        && wire::write_ipv4_udp_header(
                            &mut p.buf[start - 28..start],
                            src,
                            to,
                            end - start,
                            IP_ID.fetch_add(1, Relaxed),
                        )
                    {
                        // The IPv4/UDP/service-message headers are in the
                        // buffer's headroom, in front of the packet.
                        d.advance = (start as i32 - 28) - d.headroom as i32;
                        d.new_len = (end - (start - 28)) as u32;
                        d.next = sys::affinity_next_AFFINITY_NEXT_LOOKUP;
                        d.flags |= sys::affinity_action_flag_AFFINITY_TRACE_PUNT;
                    } else {
                        send_udp(to, &p.buf[start..end]);
                        d.next = sys::affinity_next_AFFINITY_NEXT_DROP;
                        d.flags |= sys::affinity_action_flag_AFFINITY_TRACE_PUNT
                            | sys::affinity_action_flag_AFFINITY_TRACE_CONSUMED;
                    }
                }
            }
        }
        drop(bufs);
        send_released(&mut w);
        flush(w.take_messages());
    }));
    if r.is_err() {
        // A bug must not take the router down: drop this frame's packets.
        for d in descs {
            d.next = sys::affinity_next_AFFINITY_NEXT_DROP;
            d.advance = 0;
        }
    }
}

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
    // SAFETY: the shim passes the UDP payload of a live buffer.
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
                Disposition::Drop(_) | Disposition::Consumed => {}
            }
        }
        send_released(&mut w);
        flush(w.take_messages());
    }));
}

#[no_mangle]
pub extern "C" fn affinity_rs_tick(now: f64) {
    let Some(st) = STATE.get() else { return };
    let _ = catch_unwind(AssertUnwindSafe(|| flush(st.agent.tick(ns(now)))));
}

#[no_mangle]
pub unsafe extern "C" fn affinity_rs_show(now: f64, args: *const c_char) -> *mut c_char {
    let text = catch_unwind(AssertUnwindSafe(|| {
        let Some(st) = STATE.get() else {
            return String::from("affinity: not initialised\n");
        };
        // SAFETY: the shim passes a NUL-terminated vector.
        let args = if args.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(args) }
                .to_string_lossy()
                .into_owned()
        };
        affinity_forwarding_agent::show::render(&st.agent, ns(now), &args)
    }))
    .unwrap_or_else(|_| String::from("affinity: internal error\n"));
    CString::new(text.replace('\0', " ")).map_or(std::ptr::null_mut(), CString::into_raw)
}

#[no_mangle]
pub unsafe extern "C" fn affinity_rs_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from CString::into_raw in affinity_rs_show.
        drop(unsafe { CString::from_raw(s) });
    }
}

#[no_mangle]
pub extern "C" fn affinity_rs_counter_count() -> u32 {
    Counter::ALL.len() as u32
}

#[no_mangle]
pub extern "C" fn affinity_rs_counter_name(i: u32) -> *const c_char {
    STATE
        .get()
        .and_then(|s| s.counter_names.get(i as usize))
        .map_or(c"".as_ptr(), |c| c.as_ptr())
}

#[no_mangle]
pub extern "C" fn affinity_rs_counter_value(i: u32) -> u64 {
    match (STATE.get(), Counter::ALL.get(i as usize)) {
        (Some(s), Some(c)) => s.agent.counter(*c),
        _ => 0,
    }
}

#[no_mangle]
pub unsafe extern "C" fn affinity_rs_set_auth_key(
    key_id: u16,
    algorithm: u8,
    key: *const u8,
    len: u32,
) -> i32 {
    let Some(st) = STATE.get() else { return -1 };
    let Some(alg) = AuthAlgorithm::from_u8(algorithm) else {
        return -2;
    };
    if key.is_null() || len == 0 || len > 64 {
        return -3;
    }
    // SAFETY: the shim passes `len` (≤ 64) bytes of the API message or CLI vector.
    let secret = unsafe { std::slice::from_raw_parts(key, len as usize) }.to_vec();
    let mut policy = st.agent.auth().clone();
    policy.keys.rotate_to(Key::new(key_id, alg, secret), 0, 60);
    policy.require = true;
    st.agent.set_auth(policy);
    0
}

#[no_mangle]
pub extern "C" fn affinity_rs_set_agent_address(address: u32) {
    AGENT_ADDR.store(address, Relaxed);
}

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
        // SAFETY: FFI callback from the shim with its own context pointer.
        unsafe { cb(ctx, &row) };
    }
    rows.len() as u32
}

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
        // SAFETY: FFI callback from the shim with its own context pointer.
        unsafe { cb(ctx, &row) };
    }
    rows.len() as u32
}

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
    forward: u32,
) -> u32 {
    let Some(st) = STATE.get() else { return 0 };
    catch_unwind(AssertUnwindSafe(|| {
        let actions = if forward != 0 {
            affinity_forwarding_agent::actions::ActionSet {
                dispatch_flags: affinity_api::dispatch::FORWARD,
                forward_addr: u32::from_be(forward),
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
                    protocol: 6,
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
