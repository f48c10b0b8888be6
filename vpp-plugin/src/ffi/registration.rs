//! What VPP's plugin loader looks up (`vlib_plugin_registration`), and the
//! symbol that keeps the C shim's objects linked in.

use super::sys;
use std::ffi::c_char;

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

/// Keeps the shim's object (its node, feature, CLI and API registrations,
/// all constructors) linked into the cdylib.
#[no_mangle]
pub extern "C" fn affinity_rs_shim_version() -> u32 {
    // SAFETY: FFI call without arguments.
    unsafe { sys::affinity_shim_version() }
}
