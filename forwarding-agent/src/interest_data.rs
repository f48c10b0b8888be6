//! The forwarding agent's interest data: the 16 bytes this agent puts in the
//! FA interest data segment of every interest match it sends. Managers treat
//! them as opaque and echo them back (in an affinity update or an
//! IP-packet-only message), which is how a returned packet finds its held
//! original and its place in service chaining.

use crate::wire::interest_data::{
    self,
    field::{HOLD_TOKEN, INSTANCE_ID, SEARCH_FIRST, SERVICE_PRECEDENCE, WILDCARD_ID},
};
use crate::wire::{get_u16, get_u32, set_u16, set_u32};

/// The forwarding agent's interest data (opaque to managers, echoed back):
/// who punted, the hold token, and the rank of the punting wildcard for
/// chaining.
///
/// Layout, 16 bytes, network order: `instance_id` (0..4), `hold_token`
/// (4..8, 0 = not held), `search_first` (8, 0 or 1), one zero byte (9),
/// `service_precedence` (10..12), `wildcard_id` (12..16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardingAgentInterestData {
    pub instance_id: u32,
    pub hold_token: u32,
    pub search_first: bool,
    pub service_precedence: u16,
    pub wildcard_id: u32,
}

impl ForwardingAgentInterestData {
    /// Encoded length in bytes.
    pub const LEN: usize = interest_data::LEN;

    /// The 16 bytes carried in the FA interest data segment.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        set_u32(&mut b, INSTANCE_ID, self.instance_id);
        set_u32(&mut b, HOLD_TOKEN, self.hold_token);
        b[SEARCH_FIRST] = self.search_first as u8;
        set_u16(&mut b, SERVICE_PRECEDENCE, self.service_precedence);
        set_u32(&mut b, WILDCARD_ID, self.wildcard_id);
        b
    }

    /// Reads the 16 bytes back; `None` when `b` is not exactly 16 bytes
    /// long (another agent's, or a manager's, data).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        Some(ForwardingAgentInterestData {
            instance_id: get_u32(b, INSTANCE_ID),
            hold_token: get_u32(b, HOLD_TOKEN),
            search_first: b[SEARCH_FIRST] != 0,
            service_precedence: get_u16(b, SERVICE_PRECEDENCE),
            wildcard_id: get_u32(b, WILDCARD_ID),
        })
    }

    /// Chaining rank of the punting wildcard (see `WildcardEntry::rank`).
    pub fn rank(&self) -> (bool, u16) {
        (!self.search_first, u16::MAX - self.service_precedence)
    }

    /// This agent's data for a punt by a wildcard of rank `rank` (id
    /// `wildcard_id`, 0 for a fixed affinity) with hold token `hold_token`.
    pub(crate) fn for_rank(
        instance_id: u32,
        hold_token: u32,
        rank: (bool, u16),
        wildcard_id: u32,
    ) -> Self {
        ForwardingAgentInterestData {
            instance_id,
            hold_token,
            search_first: !rank.0,
            service_precedence: u16::MAX - rank.1,
            wildcard_id,
        }
    }
}

/// Manager interest data (segment 7) the agent holds for echoing in
/// interest matches (PROTOCOL.md §7, seed FIG 10C), interned: affinities
/// with the same data share one copy, named by a small id in their action
/// set. Ids are never reused, so a worker never reads another affinity's
/// data; the table is therefore bounded ([`ManagerDataTable::CAPACITY`]
/// distinct values) and data beyond it is not echoed (counted).
#[derive(Default)]
pub(crate) struct ManagerDataTable {
    inner: parking_lot::RwLock<ManagerData>,
}

#[derive(Default)]
struct ManagerData {
    /// Id n is `values[n - 1]`.
    values: Vec<std::sync::Arc<[u8]>>,
    ids: std::collections::HashMap<std::sync::Arc<[u8]>, u32>,
}

impl ManagerDataTable {
    /// Distinct values kept (each at most 1024 bytes: at most 4 MiB).
    pub const CAPACITY: usize = 4096;

    /// The id of `data` (≥ 1), adding it when new; `None` when the table
    /// is full (control thread).
    pub fn intern(&self, data: &[u8]) -> Option<u32> {
        if let Some(&id) = self.inner.read().ids.get(data) {
            return Some(id);
        }
        let mut t = self.inner.write();
        if let Some(&id) = t.ids.get(data) {
            return Some(id);
        }
        if t.values.len() >= Self::CAPACITY {
            return None;
        }
        let v: std::sync::Arc<[u8]> = data.into();
        t.values.push(v.clone());
        let id = t.values.len() as u32;
        t.ids.insert(v, id);
        Some(id)
    }

    /// The data of id `id` (workers, when building an interest match).
    pub fn get(&self, id: u32) -> Option<std::sync::Arc<[u8]>> {
        let i = (id as usize).checked_sub(1)?;
        self.inner.read().values.get(i).cloned()
    }
}
