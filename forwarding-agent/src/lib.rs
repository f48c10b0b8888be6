//! The affinity forwarding-agent core: affinity tables, the per-packet data
//! path and the control-message handling, in Rust with no VPP dependency.
//! The same code runs inside VPP (`vpp-plugin/`, the FFI layer over the C
//! shim) and in the Linux host agent (`host-agent/`).
//!
//! The rooms, named by the path a packet or a message takes:
//!
//! | room | what lives there |
//! |------|------------------|
//! | [`config`] | [`AgentConfig`], the settings read at start |
//! | [`agent`] | [`Agent`], the shared state, and what the control side publishes for workers |
//! | [`datapath`] | the packet path: batch and parse (`mod.rs`) → `lookup` → `act` (rewrite, next hop) → `punt` (copies, punts, holds) → [`Disposition`] |
//! | [`hold`] | the hold queue (packets waiting for their manager) |
//! | [`control`] | the control path: receive (`mod.rs`) → `verify` (parse, authenticate, replay) → `apply` → `reply` |
//! | [`timers`] | [`Agent::tick`] and [`Agent::poll_timeout`] (expiry, hold timeouts) |
//! | [`interest_data`] | [`ForwardingAgentInterestData`], the 16 bytes managers echo back |
//! | [`introspection`] | rows for `show` ([`FixedRow`], [`WildcardRow`], [`ManagerInfo`]), counters, forward statistics |
//! | [`show`] | the text `show` commands print |
//! | [`fixed_affinity`], [`wildcard_affinity`], [`actions`] | the tables |
//! | [`wire`] | IPv4/TCP/UDP layouts, parsing and rewriting |
//! | [`counters`], [`huge_pages`] | counters per thread; huge-page allocation |
//!
//! Use:
//! ```
//! use affinity_forwarding_agent::{Agent, AgentConfig, Disposition, PacketBuf};
//! let agent = Agent::new(AgentConfig { fixed_capacity: 1024, ..Default::default() });
//! let mut worker = agent.worker();           // one per packet thread
//! // control thread: for each service message datagram
//! let out = agent.handle_control(0, "192.0.2.10:1638".parse().unwrap(), &[]);
//! assert!(out.replies.is_empty());           // garbage is counted, not answered
//! // packet thread: a batch of packets with headroom before each
//! let mut buf = vec![0u8; 256];
//! let mut pkts = [PacketBuf::new(&mut buf, 128, 0)];
//! let mut out = [Disposition::Pass];
//! worker.process_batch(0, &mut pkts, &mut out);
//! // control thread: sleep until the agent next needs time, then tick
//! assert_eq!(agent.poll_timeout(), None);    // nothing installed, nothing held
//! ```
//! Punts come back as [`Disposition::Punt`] (the service message is in the
//! buffer, in front of the packet); out-of-line messages from
//! [`Worker::take_messages`]; expiry and hold timeouts from [`Agent::tick`],
//! due at [`Agent::poll_timeout`].

pub mod actions;
pub mod activity;
pub mod agent;
pub mod config;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod fixed_affinity;
pub mod hold;
pub mod huge_pages;
pub mod interest_data;
pub mod introspection;
pub mod show;
pub mod synproxy;
pub mod timers;
pub mod wildcard_affinity;
pub mod wire;

pub use agent::{Agent, DEFAULT_WARM_UP_MS};
pub use config::{AgentConfig, OwnerQuota, DEFAULT_MAX_WILDCARD_PATTERNS};
pub use control::{ControlOutput, ReturnedPacket};
pub use counters::Counter;
pub use datapath::{Decision, Disposition, Matched, PacketBuf, Worker, BATCH};
pub use interest_data::ForwardingAgentInterestData;
pub use introspection::{
    FixedRow, ForwardStats, ManagerInfo, Occupancy, OwnerOccupancy, WildcardRow,
};
