//! The forwarding agent's interest data: the 16 bytes this agent puts in the
//! FA interest data segment of every interest match it sends. Managers treat
//! them as opaque and echo them back (in an affinity update or an
//! IP-packet-only message), which is how a returned packet finds its held
//! original and its place in service chaining.

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
    pub const LEN: usize = 16;

    /// The 16 bytes carried in the FA interest data segment.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.instance_id.to_be_bytes());
        b[4..8].copy_from_slice(&self.hold_token.to_be_bytes());
        b[8] = self.search_first as u8;
        b[10..12].copy_from_slice(&self.service_precedence.to_be_bytes());
        b[12..16].copy_from_slice(&self.wildcard_id.to_be_bytes());
        b
    }

    /// Reads the 16 bytes back; `None` when `b` is not exactly 16 bytes
    /// long (another agent's, or a manager's, data).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; 16] = b.try_into().ok()?;
        Some(ForwardingAgentInterestData {
            instance_id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            hold_token: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            search_first: b[8] != 0,
            service_precedence: u16::from_be_bytes([b[10], b[11]]),
            wildcard_id: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
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
