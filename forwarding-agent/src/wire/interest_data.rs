//! The layout of the agent's interest data: the 16 opaque bytes a punt
//! carries in its forwarding-agent interest-data segment and a manager
//! echoes back unchanged (`ForwardingAgentInterestData` encodes and decodes them).
//! Private to the agents; network byte order like the rest of the message.

/// Byte ranges of the interest data.
pub mod field {
    use crate::wire::Field;

    /// The punting agent's instance id (u32).
    pub const INSTANCE_ID: Field = 0..4;
    /// Hold-queue token of a held packet, 0 when none (u32).
    pub const HOLD_TOKEN: Field = 4..8;
    /// 1 when the punting wildcard is searched first, else 0.
    pub const SEARCH_FIRST: usize = 8;
    // Byte 9 is reserved (0).
    /// Service precedence of the punting wildcard (u16).
    pub const SERVICE_PRECEDENCE: Field = 10..12;
    /// Id of the punting wildcard (u32).
    pub const WILDCARD_ID: Field = 12..16;
}

/// Length of the interest data, bytes.
pub const LEN: usize = field::WILDCARD_ID.end;

#[cfg(test)]
mod tests {
    use crate::ForwardingAgentInterestData;

    #[test]
    fn golden_interest_data_round_trip() {
        let d = ForwardingAgentInterestData {
            instance_id: 0x0102_0304,
            hold_token: 0x0506_0708,
            search_first: true,
            service_precedence: 0x0a0b,
            wildcard_id: 0x0c0d_0e0f,
        };
        #[rustfmt::skip]
        let expected: [u8; super::LEN] = [
            1, 2, 3, 4, 5, 6, 7, 8, // instance id, hold token
            1, 0, 0x0a, 0x0b,       // search first, reserved, precedence
            0x0c, 0x0d, 0x0e, 0x0f, // wildcard id
        ];
        assert_eq!(d.encode(), expected);
        assert_eq!(ForwardingAgentInterestData::decode(&expected), Some(d));
        assert_eq!(ForwardingAgentInterestData::decode(&expected[..15]), None);
    }
}
