//! The affinity service manager: configuration, backend selection, the
//! decision core (no I/O) and the daemon around it.
//!
//! Rooms:
//! - [`config`] — the TOML file, its defaults and `--check-config`.
//! - [`core`] — [`ManagerCore`], the decision logic without I/O: datagrams,
//!   health results and commands in, datagrams out, and
//!   [`ManagerCore::poll_timeout`] saying when it next needs time. It owns
//!   its parts in sibling files: the service registry
//!   ([`core::ServiceRegistry`]), the flow table ([`core::FlowTable`]), the
//!   message builders ([`core::Messages`]), the command language
//!   ([`Command`]) and the status/metrics reports.
//! - [`algorithm`] — backend selection (round robin, least connections,
//!   Maglev, feedback); [`snat`] — source-NAT port pools.
//! - [`daemon`] — the event loop around the core: UDP socket, control
//!   socket, metrics, signals; sleeps until the core's next timer or an
//!   event. [`batch_io`] — `recvmmsg`/`sendmmsg` and UDP GSO;
//!   [`health`] — health-check probes on their own thread.
//!
//! Packets inside IP-packet-only messages are parsed by the forwarding-agent
//! core's `wire` (`affinity_forwarding_agent::wire`).

pub mod algorithm;
pub mod batch_io;
pub mod config;
pub mod core;
pub mod daemon;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod snat;

pub use crate::config::Config;
pub use crate::core::{Command, FlowState, ManagerCore, Outgoing};
