//! The protocol's assigned numbers: version, lengths, message types, segment
//! types and flag bits (`api/PROTOCOL.md`, "Message header", "Message types",
//! "Segment header" and the per-segment tables). A leaf: every other module
//! may use it, it uses none of them.

/// Protocol version this crate speaks (header byte 0).
pub const VERSION: u8 = 1;
/// Length of the fixed message header, bytes.
pub const HEADER_LEN: usize = 16;
/// Address family value for IPv4 (header byte 4; the only one defined in
/// version 1).
pub const AF_INET: u8 = 1;

/// Bit 15 of the segment type field: the receiver must understand this
/// segment (PROTOCOL.md, "Segment header").
pub const REQUIRED_FLAG: u16 = 0x8000;
/// Length of a segment header (type and length, both u16 network order), bytes.
pub const SEGMENT_HEADER_LEN: usize = 4;

/// Service message types (header byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Manager → agents: wildcard affinities with their per-affinity segments.
    AffinityUpdateWildcard = 1,
    /// Manager → agent: fixed affinities, optionally returning a packet.
    AffinityUpdateFixed = 2,
    /// Agent → manager: an update or segment was refused.
    AffinityUpdateDeny = 3,
    /// Agent → manager: a packet matched a wildcard's interest criteria.
    InterestMatchWildcard = 4,
    /// Agent → manager: a packet matched a fixed affinity's interest criteria.
    InterestMatchFixed = 5,
    /// Either way: a packet handed back or on, with no affinity.
    IpPacketOnly = 6,
    /// Extension: agent announces itself and its capabilities.
    AgentHello = 16,
    /// Extension: liveness, no segments required.
    Keepalive = 17,
    /// Extension: a manager asks an agent to resend what it holds.
    AffinityDumpRequest = 18,
    /// Extension: an agent reports counters.
    StatisticsReport = 19,
}

impl MessageType {
    /// Every message type, in the order of the columns of the placement
    /// table (`rules.rs`).
    pub const ALL: [MessageType; 10] = [
        MessageType::AffinityUpdateWildcard,
        MessageType::AffinityUpdateFixed,
        MessageType::AffinityUpdateDeny,
        MessageType::InterestMatchWildcard,
        MessageType::InterestMatchFixed,
        MessageType::IpPacketOnly,
        MessageType::AgentHello,
        MessageType::Keepalive,
        MessageType::AffinityDumpRequest,
        MessageType::StatisticsReport,
    ];

    /// The message type of header byte 1, `None` for a number no message
    /// type has.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u8 == v)
    }

    /// Position in [`MessageType::ALL`].
    pub(crate) const fn column(self) -> usize {
        COLUMN[self as usize] as usize
    }
}

/// [`MessageType::column`] by type number, filled at compile time.
const COLUMN: [u8; 20] = {
    let mut column = [0; 20];
    let mut i = 0;
    while i < MessageType::ALL.len() {
        column[MessageType::ALL[i] as usize] = i as u8;
        i += 1;
    }
    column
};

/// Segment type numbers (low 15 bits of the segment type field).
pub mod seg {
    /// Wildcard affinity, 32 bytes.
    pub const WILDCARD_AFFINITY: u16 = 1;
    /// Fixed affinity, 24 bytes.
    pub const FIXED_AFFINITY: u16 = 2;
    /// Affinity identifier, 8 bytes.
    pub const AFFINITY_IDENTIFIER: u16 = 3;
    /// Service precedence, 4 bytes.
    pub const SERVICE_PRECEDENCE: u16 = 4;
    /// Backup precedence, 4 bytes.
    pub const BACKUP_PRECEDENCE: u16 = 5;
    /// Security, 4 + digest bytes.
    pub const SECURITY: u16 = 6;
    /// Manager interest data, 0–1024 bytes.
    pub const SM_INTEREST_DATA: u16 = 7;
    /// Agent interest data, 0–1024 bytes.
    pub const FA_INTEREST_DATA: u16 = 8;
    /// Identity info, 4 + 0–255 bytes.
    pub const IDENTITY_INFO: u16 = 9;
    /// NAT action, 16 bytes.
    pub const NAT_ACTION: u16 = 10;
    /// Advertise action, 12 bytes.
    pub const ADVERTISE_ACTION: u16 = 11;
    /// Sequence-number adjust action, 16 bytes.
    pub const SEQ_ADJUST_ACTION: u16 = 12;
    /// Interest criteria action, 12 bytes.
    pub const INTEREST_CRITERIA_ACTION: u16 = 13;
    /// Action list, 0–64 bytes.
    pub const ACTION_LIST: u16 = 14;
    /// IP packet, at least 20 bytes; the last segment.
    pub const IP_PACKET: u16 = 15;
    /// Deny reason, 12 bytes.
    pub const DENY_REASON: u16 = 16;
    /// Capabilities, 12 bytes (extension).
    pub const CAPABILITIES: u16 = 17;
    /// Statistics, 20 bytes (extension).
    pub const STATISTICS: u16 = 18;
    /// Receiver, 4 bytes (extension): the address a message is meant for,
    /// covered by the digest so a signed message cannot be replayed to
    /// another receiver (PROTOCOL.md, "Security").
    pub const RECEIVER: u16 = 19;
    /// Admission action (punt budgets, SYN proxy), 20 bytes (extension).
    pub const ADMISSION_ACTION: u16 = 20;
    /// Timestamp adjust action (a SYN-proxied flow's TSval/TSecr offset), 8
    /// bytes (extension).
    pub const TS_ADJUST_ACTION: u16 = 21;
}

/// Dispatch flags of an affinity.
pub mod dispatch {
    /// Send the packet to the forward address as next hop, untranslated.
    pub const FORWARD: u8 = 0x01;
    /// All dispatch bits defined in version 1; others make an affinity
    /// segment malformed.
    pub const DEFINED: u8 = FORWARD;
}

/// Information flags of an affinity.
pub mod info {
    /// Count packets and bytes per forward address.
    pub const STATISTICS: u8 = 0x01;
    /// All information bits defined in version 1; others make an affinity
    /// segment malformed.
    pub const DEFINED: u8 = STATISTICS;
}

/// Activity flags: byte 3 of a fixed affinity segment (reserved before
/// this extension), meaningful only in an activity report (statistics
/// report, type 19); sent 0 elsewhere, and bits not listed here are sent 0
/// and ignored on receipt, so receivers that predate it (which ignore the
/// reserved byte) read the report as before (PROTOCOL.md, "Activity
/// reports").
pub mod activity {
    /// A TCP segment with ACK set and neither SYN nor RST (a
    /// *handshake-complete* segment, Linux conntrack's ESTABLISHED notion)
    /// has hit the fixed affinity since it was added or since the last SYN
    /// that hit it (a new connection on the same 5-tuple, RFC 9293 section
    /// 3.10.7.4). Never set for UDP or ICMP.
    pub const HANDSHAKE_COMPLETE: u8 = 0x01;
    /// The agent marks handshake-complete segments on this affinity:
    /// [`HANDSHAKE_COMPLETE`] clear means none was seen (not "unknown").
    /// Set on every TCP pair from an agent with
    /// [`crate::capability::HANDSHAKE_MARKS`], so a manager that missed the
    /// agent's hello (it restarted after the agent) still knows.
    pub const TRACKED: u8 = 0x02;
    /// The bits defined; others are sent 0 and ignored.
    pub const DEFINED: u8 = HANDSHAKE_COMPLETE | TRACKED;
}

/// Feature bits of the capabilities segment's (type 17) first word. Bit n
/// of that word for n in 10–31 says action segment type n is performed;
/// segment types 0–9 are no actions (0 is no segment at all), so bits 0–9
/// name features instead (PROTOCOL.md, "17 — capabilities").
pub mod capability {
    /// The agent marks handshake-complete TCP segments on its fixed
    /// affinities and reports them ([`crate::activity`]): a manager
    /// promotes a half-open flow it reports only on both directions' marks.
    pub const HANDSHAKE_MARKS: u32 = 1 << 0;
}

/// Interest mask bits: why a packet interests a manager.
pub mod interest {
    /// TCP FIN set.
    pub const FIN: u16 = 1 << 0;
    /// TCP SYN set.
    pub const SYN: u16 = 1 << 1;
    /// TCP RST set.
    pub const RST: u16 = 1 << 2;
    /// TCP PSH set.
    pub const PSH: u16 = 1 << 3;
    /// TCP ACK set.
    pub const ACK: u16 = 1 << 4;
    /// TCP URG set.
    pub const URG: u16 = 1 << 5;
    /// The packet carries transport payload (TCP or UDP).
    pub const DATA: u16 = 1 << 6;
    /// First payload-carrying packet of the flow seen by this affinity
    /// (for UDP: the first packet).
    pub const FIRST_DATA: u16 = 1 << 7;
    /// The packet is an IP fragment.
    pub const FRAGMENT: u16 = 1 << 8;
    /// Every packet.
    pub const ALL: u16 = 1 << 15;
    /// All bits defined in version 1.
    pub const DEFINED: u16 = FIN | SYN | RST | PSH | ACK | URG | DATA | FIRST_DATA | FRAGMENT | ALL;
}
