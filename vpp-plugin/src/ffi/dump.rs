//! The API's dumps of the affinity tables (one callback per row) and the
//! benchmark's `test affinity fill`.

use super::{ns, sys, STATE};
use affinity_forwarding_agent::wire::IpProtocol;
use std::ffi::c_void;
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};

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
