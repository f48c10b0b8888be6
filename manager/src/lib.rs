//! The affinity service manager: configuration, backend selection, the
//! decision core (no I/O) and the daemon around it.

pub mod algorithm;
pub mod batch_io;
pub mod config;
pub mod core;
pub mod daemon;
pub mod health;
pub mod snat;

pub use crate::config::Config;
pub use crate::core::{Command, ManagerCore, Outgoing};
