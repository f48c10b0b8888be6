//! The common case, start to end in one step: a plain packet (unfragmented
//! IPv4 TCP or UDP without options, `wire::parse_plain`) that hits a live
//! fixed affinity whose action set is only NAT and a next hop
//! (`ActionTable::plain`) and that no SYN-proxy connection in progress
//! concerns (`SpliceTable::may_concern`), while no packet of the batch is
//! traced. That is nearly every packet of an established flow.
//!
//! Why a path of its own: the general one (lookup → act) is written for
//! every kind of packet and action set, and a fixed hit paid for all of it
//! — a parse into a full `PacketInfo`, the decision record, interest,
//! SYN-proxy, fragment and chaining checks, and a rewrite that rereads the
//! headers. This one does only what such a packet needs: count it (the
//! worker's counters and the entry's, with its handshake mark), rewrite it
//! from the fields already read, and give its next hop, with the same
//! bytes, counters and dispositions as the general path
//! (`tests/fast_path.rs` runs both over random packets and action sets).
//! Anything it declines goes through the general path untouched.
//!
//! Measured (with the batch-loop changes that came with it): cachegrind,
//! a fixed hit with NAT, 754 → 509 instructions per packet; VPP v26.06,
//! `test/vpp-runtime-bench.sh`, the same sitting alternating the plugin
//! before and after: 1.18 M flows 175–188 → 119–130 clocks per packet
//! (0.97–1.00 → 0.64–0.66 × `lb4-nat4-port`, 0.26–0.27 → 0.17–0.19 ×
//! `nat44-ed-in2out`), 1152 flows 159–171 → 94–102.
//! Since (stop 22), 429 → 395 instructions: NAT applied as keep/set masks
//! read straight from the action slot's words (`PlainNat`, no field-wise
//! decode and select), the packet counted on the entry the look-up found
//! (`FixedTable::count_hit`, not found again by slot), and both entries of
//! the home line checked before the probe loop. VPP, 1.18 M flows, four
//! alternations: best round 103–112 → 97–102 clocks per packet. Stop 23,
//! 395 → 370: the batch loop's per-packet ring is two fixed-size arrays
//! (no bounds checks), and this path borrows only the worker's counters
//! and marked slots ([`FastState`]), so a plain packet's parse is read in
//! place from the ring.
//! Stop 24, 370 → 366 in the core, and some 15 fewer in the VPP node's
//! frame loop: this path's counters are tallied per chunk, and a batch
//! whose every packet it passed tells the node so
//! ([`super::Worker::plain_passes`]), which then skips its per-packet
//! result loop. VPP, 1.18 M flows, four alternations (`BENCH_ROUNDS=7`):
//! 92 / 97 / 93 / 103 → 90 / 90 / 90 / 91 clocks per packet, ratio to
//! `lb4-nat4-port` 0.51 / 0.51 / 0.51 / 0.53 → 0.51 / 0.47 / 0.47 / 0.48.
//! Then NAT, which measured 13 clocks of the node's ~92 (the rewrite left
//! out, same sitting: 77–83): its masks and the set bytes' checksum sums
//! are stored with the action set (`PlainNat`, worked out once, not per
//! packet), and the checksums fold a 32-bit half at a time. 366 → 363
//! instructions; VPP, three alternations (`BENCH_ROUNDS=7`): 91 / 92 →
//! 89 / 91 / 91 clocks, ratio 0.52 / 0.52 → 0.49 / 0.49 / 0.48.

use super::act::dispatch_to;
use super::{BatchCtx, Disposition, PacketBuf};
use crate::counters::{Counter, LocalCounters};
use crate::fixed_affinity::{FixedHit, Mark};
use crate::wire::{self, Plain};

/// The worker's state the common case writes: its counters, the slots it
/// marked handshake-complete (`Worker::marked`) and the batch's tallies.
/// Borrowed field by field, so the packet's parse can stay borrowed from
/// the worker's ring meanwhile (copying it out spilled it to the stack:
/// cachegrind 372 → 370 instructions a packet).
pub(super) struct FastState<'w> {
    pub counters: &'w mut LocalCounters,
    pub marked: &'w mut Vec<u32>,
    /// Packets this path took in the chunk: the batch loop adds them to
    /// the `Packets` and `FixedHit` counters once at the chunk's end, not
    /// one increment each per packet.
    pub hits: &'w mut u64,
    /// Of those, packets NAT rewrote (`NatApplied`, added the same way).
    pub nat_applied: &'w mut u64,
    /// Of those, packets passed (no forward address): over the whole
    /// batch, [`super::Worker::plain_passes`].
    pub passes: &'w mut usize,
}

impl FastState<'_> {
    /// Acts on plain packet `p` (read as `plain`) whose fixed affinity at
    /// `slot` holds `v`, writing its disposition into `out`; false when the
    /// entry has expired, its action set is not plain, or a SYN-proxy
    /// connection in progress may concern it — then nothing was counted,
    /// changed or written and the general path takes the packet.
    ///
    /// `out` is written in place rather than returned: a returned
    /// disposition was built on the stack field by field and read back
    /// whole for the copy, and that read waited for the narrower stores
    /// to retire (VPP perf: 13 % of the batch loop's samples on it).
    #[inline(always)]
    pub(super) fn fast_fixed(
        &mut self,
        ctx: &BatchCtx<'_>,
        p: &mut PacketBuf<'_>,
        plain: &Plain,
        hit: FixedHit<'_>,
        out: &mut Disposition,
    ) -> bool {
        let v = hit.value;
        if v.expires_ds <= ctx.now {
            return false;
        }
        if !ctx.splice_idle
            && plain.protocol == wire::TCP
            && ctx.agent.splice.may_concern(&plain.key(), plain.tcp_flags)
        {
            return false;
        }
        let Some(a) = ctx.agent.actions.plain(v.action) else {
            return false;
        };
        if let Some(n) = a.nat() {
            // From the packet's start to the buffer's end: the headers NAT
            // rewrites are inside the packet (`parse_plain` checked them
            // against its length), and this slice costs no clamping.
            if let Some(pkt) = p.buf.get_mut(p.start..) {
                wire::apply_nat_plain(pkt, plain, &n);
            }
            *self.nat_applied += 1;
        }
        *self.hits += 1;
        if ctx.agent.config.per_flow_counters {
            // A plain UDP datagram's flags are 0: the mark is kept.
            let mark = Mark::of_flags(plain.tcp_flags);
            if ctx
                .agent
                .fixed
                .count_hit(&hit, u64::from(plain.total_len), mark)
            {
                self.counters.inc(Counter::HandshakeMarked);
                self.marked.push(hit.slot as u32);
            }
        }
        let forward = a.forward();
        // No forward address: a pass at the packet's own length.
        *self.passes += usize::from(forward.is_none());
        dispatch_to(self.counters, forward, out);
        true
    }
}
