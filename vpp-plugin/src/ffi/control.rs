//! The control plane's entry points: service messages received on the
//! control port, and the settings the API and CLI change at run time
//! (signing key, agent address).

use super::send::{flush, send_ip, send_released, send_udp};
use super::{ns, sys, AGENT_ADDR, STATE};
use affinity_api::{AuthAlgorithm, Key};
use affinity_forwarding_agent::{Disposition, PacketBuf};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;

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
