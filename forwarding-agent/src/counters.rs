//! Named counters. Workers count into plain arrays and publish them once per
//! batch; `show` sums the published values of all workers and the control
//! thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($name:ident => $text:literal,)*) => {
        /// Every counter the agent keeps.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($name,)* }
        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$name,)*];
            /// Stable name (used by `show affinity stats` and `show errors`).
            pub fn name(self) -> &'static str {
                match self { $(Counter::$name => $text,)* }
            }
        }
    };
}

counters! {
    Packets => "packets",
    FixedHit => "fixed-hit",
    FixedExpired => "fixed-expired-at-lookup",
    WildcardHit => "wildcard-hit",
    MissPassed => "miss-passed",
    NatApplied => "nat-applied",
    SeqAdjusted => "seq-adjusted",
    Forwarded => "dispatched-to-forward-address",
    DropForwardZero => "drop-forward-address-zero",
    DropAdvertised => "drop-advertised-no-affinity",
    // A TCP segment (not a bare SYN) that matched nothing while the agent
    // warms up after a start (`Agent::start_warm_up`).
    DropWarmUp => "drop-warm-up-no-affinity",
    DropMalformed => "drop-malformed",
    // Counted by the VPP shim: the forward address's neighbour is not yet
    // resolved (ARPed), and a frame dropped because the core panicked.
    DropForwardUnresolved => "drop-forward-address-unresolved",
    DropInternalError => "drop-internal-error",
    MalformedPassed => "malformed-passed",
    // IPv6 (version 6) is passed untouched until the agent supports it.
    Ipv6Passed => "ipv6-passed",
    Punted => "punted",
    PuntCopiedOut => "punt-no-headroom-copied",
    PuntFailed => "punt-failed",
    InterestCopy => "interest-copy-sent",
    InterestNoData => "interest-sent-without-packet",
    Held => "held",
    HoldOverflow => "hold-queue-full",
    HoldReleased => "hold-released",
    HoldTimeout => "hold-timeout-sent-to-manager",
    FragmentCacheHit => "fragment-followed-first",
    FragmentNoState => "fragment-without-first",
    FragmentHeld => "fragment-held",
    FragmentReleased => "fragment-released",
    FragmentExpired => "fragment-expired",
    FragmentOverflow => "fragment-overflow",
    IcmpErrorTranslated => "icmp-error-translated",
    Returned => "returned-packets",
    ReturnedNotRepunted => "returned-not-repunted",
    CtlMessages => "control-messages",
    CtlParseError => "control-parse-error",
    CtlAuthFail => "control-auth-failed",
    CtlReplay => "control-replay",
    CtlSocketDrops => "control-socket-drops",
    CtlAuthUnsigned => "control-auth-unsigned",
    CtlAuthUnknownKey => "control-auth-unknown-key",
    CtlAuthBadDigest => "control-auth-bad-digest",
    CtlAuthWrongIdentity => "control-auth-wrong-identity",
    CtlAuthFarFuture => "control-auth-far-future",
    CtlAuthWrongReceiver => "control-auth-wrong-receiver",
    CtlNotAllowed => "control-sender-not-allowed",
    CtlManagersFull => "control-manager-table-full",
    StaleDenySent => "stale-sequence-deny-sent",
    CtlUnexpected => "control-unexpected-type",
    // A manager's return-routability challenge (a keepalive carrying
    // manager interest data) echoed back to it.
    CtlChallengeAnswered => "control-challenge-answered",
    // Replies to an unauthenticated message left unsent because together
    // they were larger than the message (no amplification: issue 16, item 7),
    // one per reply.
    CtlReplyLargerThanRequest => "control-reply-larger-than-request",
    WildcardAdd => "wildcard-added",
    WildcardRefresh => "wildcard-refreshed",
    WildcardDelete => "wildcard-deleted",
    WildcardFull => "wildcard-table-full",
    WildcardReclaimed => "wildcard-expired",
    FixedAdd => "fixed-added",
    FixedRefresh => "fixed-refreshed",
    FixedDelete => "fixed-deleted",
    FixedFull => "fixed-table-full",
    FixedNoWildcard => "fixed-without-supporting-wildcard",
    FixedReclaimed => "fixed-expired",
    ActionFull => "action-table-full",
    FixedQuota => "fixed-owner-quota-exceeded",
    ActionQuota => "action-owner-quota-exceeded",
    WildcardQuota => "wildcard-owner-quota-exceeded",
    // A wildcard refused because it would add a mask pattern past the
    // agent-wide cap (`AgentConfig::max_wildcard_patterns`).
    WildcardPatternsFull => "wildcard-patterns-full",
    UnsupportedAction => "unsupported-required-action",
    DenySent => "deny-sent",
    UnsupportedRequiredSegment => "unsupported-required-segment-message-dropped",
    FixedNotOwner => "fixed-change-refused-not-owner",
    ManagerDataFull => "manager-interest-data-table-full",
    ReturnedAdvertisedRouted => "returned-advertised-routed",
    ActivityReports => "activity-reports-sent",
    // A fixed affinity's first handshake-complete TCP segment (ACK without
    // SYN or RST): the agent reports it promptly (`Agent::prompt_reports`).
    HandshakeMarked => "handshake-marked",
    // Newly marked affinities past the worker's queue: they wait for the
    // periodic activity report.
    HandshakeMarksDropped => "handshake-marks-dropped",
    // Prompt activity reports: the newly marked affinities alone.
    ActivityReportsPrompt => "activity-reports-prompt-sent",
    ReturnedDroppedRefused => "returned-dropped-install-refused",
    CtlManagerReused => "control-manager-slot-reused",
    PuntAdmitDropNew => "punt-admission-drop-new-flow",
    PuntAdmitDropKnown => "punt-admission-drop-known-flow",
    SynProxyAnswered => "syn-proxy-syn-answered",
    SynProxyProved => "syn-proxy-cookie-ack-proved",
    SynProxyBadCookie => "syn-proxy-bad-cookie",
    SynProxyNoRoom => "syn-proxy-no-room-for-syn-ack",
    SynProxyBackendSyn => "syn-proxy-backend-syn-sent",
    SynProxyPendingFull => "syn-proxy-pending-full",
    SynProxySpliced => "syn-proxy-spliced",
    SynProxyAckNotReleased => "syn-proxy-client-ack-not-released",
    // A client packet of a SYN-proxied flow before its splice (the
    // backend's SYN-ACK not yet back): unadjusted, its acknowledgment is in
    // the cookie's space and the backend would answer with a reset.
    // Past the early-data bounds (`synproxy::EARLY_DATA_PACKETS`,
    // `EARLY_DATA_BYTES` per connection, `EARLY_DATA_TOTAL_BYTES`
    // agent-wide), or proved past the proved-flow cap: dropped, the
    // client retransmits.
    SynProxyEarlyData => "syn-proxy-early-data-dropped",
    // A client packet of a SYN-proxied flow before its splice, kept to be
    // sent on (adjusted, translated) right after the splice.
    SynProxyEarlyDataHeld => "syn-proxy-early-data-held",
    // Held early data sent on after the splice, in order, behind the
    // client's kept ACK.
    SynProxyEarlyDataReleased => "syn-proxy-early-data-released",
    // Held early data dropped with a connection that was never spliced
    // (the manager or the backend did not answer within
    // `synproxy::PENDING_NS`).
    SynProxyEarlyDataExpired => "syn-proxy-early-data-expired",
    // A backend refused a SYN-proxied connection (RST to the agent's SYN):
    // relayed to the client, the connection given up.
    SynProxyBackendRefused => "syn-proxy-backend-refused",
    // A proved flow's packet with the cookie, no answer from the manager
    // within `synproxy::REPROVE_NS` of its last proof (punt or answer
    // lost): punted as the proof again (also counted
    // `syn-proxy-cookie-ack-proved`). Within it, such packets are early
    // data, never a second proof.
    SynProxyReproved => "syn-proxy-proof-repeated",
    // A manager's answer to a proof of a connection its backend already
    // refused (a repeated proof's late answer): no second backend SYN; the
    // packet is dropped (the client had the RST).
    SynProxyAnswerAfterRefusal => "syn-proxy-answer-after-refusal",
    // A bare SYN on a spliced flow's fixed affinity (the client reused the
    // 5-tuple while the old connection's affinities are installed):
    // answered with a new cookie (also counted `syn-proxy-syn-answered`).
    SynProxyReuseAnswered => "syn-proxy-reused-tuple-syn-answered",
    // A splice report message (the adjusts a splice installed, PROTOCOL.md
    // "Splice reports") sent to the flow's manager: one per spliced
    // connection at the splice, and the repeats with the next periodic
    // activity round (up to 14 affinities, 7 connections, a message).
    SynProxySpliceReported => "syn-proxy-splice-reported",
    // A fixed affinity carrying a timestamp adjust (segment 21) that is
    // not TCP: denied as malformed (code 5), nothing installed.
    TsAdjustNotTcp => "ts-adjust-not-tcp-refused",
}

pub const N_COUNTERS: usize = Counter::ALL.len();

/// A worker's private counters.
#[derive(Debug, Clone)]
pub struct LocalCounters(pub [u64; N_COUNTERS]);

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters([0; N_COUNTERS])
    }
}

impl LocalCounters {
    #[inline]
    pub fn inc(&mut self, c: Counter) {
        self.0[c as usize] += 1;
    }
    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        self.0[c as usize] += n;
    }
}

/// Published counters of one worker (or the control thread).
pub struct SharedCounters(pub [AtomicU64; N_COUNTERS]);

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl SharedCounters {
    pub fn publish(&self, local: &LocalCounters) {
        for (a, v) in self.0.iter().zip(local.0.iter()) {
            a.store(*v, Relaxed);
        }
    }
    pub fn inc(&self, c: Counter) {
        self.0[c as usize].fetch_add(1, Relaxed);
    }
    /// Adds `n` (for counts kept outside a worker, e.g. by the VPP shim).
    pub fn add(&self, c: Counter, n: u64) {
        self.0[c as usize].fetch_add(n, Relaxed);
    }
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize].load(Relaxed)
    }
}
