//! The affinity VPP plugin: the FFI between VPP's C shim (`c-shim/`) and the
//! forwarding-agent core (`affinity_forwarding_agent`), and the plugin
//! registration VPP's loader looks up. Without VPP (no `vpp` feature, or no
//! VPP headers found by `build.rs`) this crate is empty: all packet logic
//! lives in the core and is tested there.

#[cfg(affinity_vpp)]
pub mod ffi;
