//! The hold queue: packets a worker keeps while their manager decides (an
//! interest criteria action with the hold flag), released by the manager's
//! fixed affinity update carrying the hold token, or sent to the manager
//! when their hold times out.
//!
//! Why a lock: the queue is shared by all workers (one limit for the
//! agent, `AgentConfig::hold_limit`), the control thread must find a token
//! whichever worker held it, and timeouts go out in deadline order across
//! workers. A worker takes the lock only when it holds a packet, which
//! already costs a copy and a service message; every other packet never
//! touches it. The queue is in deadline order because every packet is held
//! for the same timeout and pushed at its worker's batch time.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// A packet waiting for its fixed affinity.
pub(crate) struct HeldPacket {
    /// Echoed in the forwarding agent's interest data (never 0).
    pub token: u32,
    /// The IPv4 packet, up to its total length.
    pub packet: Vec<u8>,
    /// Monotonic nanoseconds (the caller's clock) after which the packet
    /// goes to `manager` in an IP-packet-only message.
    pub deadline_ns: u64,
    pub manager: SocketAddrV4,
    /// Rank of the punting wildcard (service chaining).
    pub rank: (bool, u16),
}

/// The agent's held packets, oldest (earliest deadline) first.
pub(crate) struct HoldQueue {
    queue: Mutex<VecDeque<HeldPacket>>,
    limit: usize,
    next_token: AtomicU32,
}

impl HoldQueue {
    pub fn new(limit: usize) -> Self {
        HoldQueue {
            queue: Mutex::new(VecDeque::new()),
            limit,
            next_token: AtomicU32::new(1),
        }
    }

    /// Holds a copy of `packet` (worker); its token, or `None` when the
    /// queue is at its limit.
    pub fn hold(
        &self,
        packet: &[u8],
        deadline_ns: u64,
        manager: SocketAddrV4,
        rank: (bool, u16),
    ) -> Option<u32> {
        let mut q = self.queue.lock();
        if q.len() >= self.limit {
            return None;
        }
        let token = self.next_token.fetch_add(1, Relaxed).max(1);
        q.push_back(HeldPacket {
            token,
            packet: packet.to_vec(),
            deadline_ns,
            manager,
            rank,
        });
        Some(token)
    }

    /// Takes every packet held under `token` (control thread).
    pub fn release(&self, token: u32, mut f: impl FnMut(HeldPacket)) {
        let mut q = self.queue.lock();
        while let Some(pos) = q.iter().position(|h| h.token == token) {
            if let Some(h) = q.remove(pos) {
                f(h);
            }
        }
    }

    /// Takes every packet whose deadline is at or before `now_ns`.
    pub fn expire(&self, now_ns: u64, mut f: impl FnMut(HeldPacket)) {
        let mut q = self.queue.lock();
        while q.front().is_some_and(|h| h.deadline_ns <= now_ns) {
            let Some(h) = q.pop_front() else { break };
            f(h);
        }
    }

    /// The earliest deadline (nanoseconds), if any packet is held.
    pub fn next_deadline(&self) -> Option<u64> {
        self.queue.lock().front().map(|h| h.deadline_ns)
    }

    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }
}
