//! The affinity forwarding-agent core: affinity tables, the per-packet data
//! path and the control-message handling, in Rust with no VPP dependency.
//! The same code runs inside VPP (`vpp-plugin/`, the FFI layer over the C
//! shim) and in the Linux host agent (`host-agent/`).
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
//! ```
//! Punts come back as [`Disposition::Punt`] (the service message is in the
//! buffer, in front of the packet); out-of-line messages from
//! [`Worker::take_messages`]; expiry and hold timeouts from [`Agent::tick`].

pub mod actions;
pub mod agent;
pub mod counters;
pub mod datapath;
pub mod fixed_affinity;
pub mod huge_pages;
pub mod show;
pub mod wildcard_affinity;
pub mod wire;

pub use agent::{
    Agent, AgentConfig, AgentInterestData, ControlOutput, FixedRow, ForwardStats, ManagerInfo,
    ReturnedPacket, WildcardRow,
};
pub use counters::Counter;
pub use datapath::{matched, Disposition, PacketBuf, Worker, BATCH};
