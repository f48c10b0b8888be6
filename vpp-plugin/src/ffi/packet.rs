//! The data node's per-frame call: a descriptor per packet in, the core's
//! decision out — the node's next slot and the counter that says why (the
//! node sets `b->error = node->errors[error]` from it, as nat44-ed does),
//! the trace record of traced packets, and how much each counter grew in
//! the frame (the node's error counters, so `show errors`, `show affinity
//! stats` and the core count with one list).
//!
//! Nothing is allocated per frame: the packet and disposition vectors are
//! the thread's, reused (see [`recycle`]).

use super::send::{control_source, flush, send_released, send_udp};
use super::{ns, sys, IP_ID, STATE};
use affinity_forwarding_agent::counters::N_COUNTERS;
use affinity_forwarding_agent::wire::{self, IPV4_UDP_HEADER_LEN};
use affinity_forwarding_agent::{Counter, Decision, Disposition, Matched, PacketBuf, Worker};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;

/// One VPP thread's data-path state.
pub(super) struct ThreadState {
    worker: Worker,
    /// The worker's counters as last reported to the node.
    reported: [u64; N_COUNTERS],
    /// Kept empty between frames, for its allocation only.
    bufs: Vec<PacketBuf<'static>>,
    out: Vec<Disposition>,
}

impl ThreadState {
    /// Fragment upkeep while no frame comes (`Worker::poll_fragments`):
    /// released fragments are sent, expired ones forgotten. `now_ns` in
    /// the core's clock (nanoseconds). Returns whether fragment state is
    /// still kept (poll again soon).
    pub(super) fn poll_fragments(&mut self, now_ns: u64) -> bool {
        self.worker.poll_fragments(now_ns);
        send_released(&mut self.worker);
        flush(self.worker.take_messages());
        self.worker.holds_fragments()
    }

    pub(super) fn new(worker: Worker) -> Self {
        ThreadState {
            reported: worker.counters().0,
            worker,
            bufs: Vec::with_capacity(affinity_forwarding_agent::BATCH),
            out: Vec::with_capacity(affinity_forwarding_agent::BATCH),
        }
    }
}

/// An empty vector with `v`'s allocation, for borrows of another lifetime
/// (a frame's buffers): the per-frame vector of [`PacketBuf`]s without an
/// allocation per frame.
fn recycle<'a, 'b>(mut v: Vec<PacketBuf<'a>>) -> Vec<PacketBuf<'b>> {
    v.clear();
    let mut v = std::mem::ManuallyDrop::new(v);
    let (ptr, cap) = (v.as_mut_ptr(), v.capacity());
    // SAFETY: the vector is empty, so no element is reinterpreted;
    // `PacketBuf<'a>` and `PacketBuf<'b>` differ only in lifetime (same
    // layout); `ptr` and `cap` come from a vector of that layout made by
    // the global allocator, which `v` (ManuallyDrop) no longer frees.
    unsafe { Vec::from_raw_parts(ptr.cast::<PacketBuf<'b>>(), 0, cap) }
}

/// A packet's 5-tuple as the core parses it (`valid` 0 when it cannot).
fn tuple(packet: &[u8]) -> sys::affinity_tuple_t {
    match wire::parse_ipv4(packet) {
        Ok(i) => sys::affinity_tuple_t {
            src_address: u32::from(i.key.src_addr).to_be(),
            dst_address: u32::from(i.key.dst_addr).to_be(),
            src_port: i.key.src_port,
            dst_port: i.key.dst_port,
            protocol: i.key.protocol,
            valid: 1,
        },
        Err(_) => sys::affinity_tuple_t {
            src_address: 0,
            dst_address: 0,
            src_port: 0,
            dst_port: 0,
            protocol: 0,
            valid: 0,
        },
    }
}

/// The packet `buf[start..start + len]`, clamped to the buffer.
fn packet(buf: &[u8], start: usize, len: usize) -> &[u8] {
    let end = start.saturating_add(len).min(buf.len());
    &buf[start.min(end)..end]
}

/// Processes one frame: fills each descriptor's `next`, `error`,
/// `advance`, `new_len` and `forward_address` (and its trace record when
/// `trace` is set), and `counts[i]` with how much counter `i` grew in this
/// frame less the packets sent to error-drop under it (error-drop counts
/// those). `now` is `vlib_time_now` (seconds). A panic drops the frame's
/// packets under `drop-internal-error`.
///
/// # Safety
/// `pkts` points to `n` initialised descriptors, each of whose `data` has
/// `headroom` writable bytes before it and `len` after it, in one buffer
/// owned by the calling thread for the call; `trace` is NULL or points to
/// a writable `affinity_trace_t`; `counts` is NULL or points to
/// `AFFINITY_N_ERROR` writable `u32`s. Only thread `thread_index` calls
/// with that index (VPP's threads each run their own frames).
#[no_mangle]
pub unsafe extern "C" fn affinity_rs_process(
    thread_index: u32,
    now: f64,
    pkts: *mut sys::affinity_pkt_t,
    n: u32,
    counts: *mut u32,
) {
    let counts: &mut [u32] = if counts.is_null() {
        &mut []
    } else {
        // SAFETY: AFFINITY_N_ERROR (= N_COUNTERS) u32s, by the contract.
        unsafe { std::slice::from_raw_parts_mut(counts, N_COUNTERS) }
    };
    counts.fill(0);
    if pkts.is_null() || n == 0 {
        return;
    }
    // SAFETY: `n` initialised descriptors, by this function's contract.
    let descs = unsafe { std::slice::from_raw_parts_mut(pkts, n as usize) };
    // Before init nothing is decided: every packet passes.
    let Some(st) = STATE.get() else {
        descs.iter_mut().for_each(pass);
        return;
    };
    let Some(thread) = st.workers.get(thread_index as usize) else {
        descs.iter_mut().for_each(pass);
        return;
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = thread.lock();
        let ts = &mut *guard;
        // SAFETY: by this function's contract, each descriptor's buffer.
        unsafe { process(ts, now, descs, counts) }
    }));
    if r.is_err() {
        // A bug must not take the router down: drop this frame's packets,
        // under their own reason.
        for d in descs.iter_mut() {
            pass(d);
            d.next = sys::AFFINITY_NEXT_DROP as u16;
            d.error = Counter::DropInternalError as u16;
        }
        counts.fill(0);
        st.shim_counters
            .add(Counter::DropInternalError, u64::from(n));
    }
}

/// Writes a pass into `d`'s outputs: on along the feature arc, unchanged.
fn pass(d: &mut sys::affinity_pkt_t) {
    d.next = sys::AFFINITY_NEXT_FEATURE as u16;
    d.error = 0;
    d.advance = 0;
    d.new_len = d.len;
    d.forward_address = 0;
}

/// [`affinity_rs_process`] once the state is found.
///
/// # Safety
/// As for [`affinity_rs_process`]: each descriptor's `headroom` bytes
/// before `data` and `len` after it are one buffer this thread owns, and
/// `trace` is NULL or writable.
unsafe fn process(
    ts: &mut ThreadState,
    now: f64,
    descs: &mut [sys::affinity_pkt_t],
    counts: &mut [u32],
) {
    let mut bufs = recycle(std::mem::take(&mut ts.bufs));
    let mut traced = false;
    for d in descs.iter() {
        // SAFETY: a vlib buffer's pre-data area and data area are one
        // contiguous allocation: `headroom` bytes before `data` and `len`
        // bytes after it belong to this buffer, which this thread owns for
        // the duration of the call (the function's contract).
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                d.data.sub(d.headroom as usize),
                (d.headroom + d.len) as usize,
            )
        };
        if !d.trace.is_null() {
            traced = true;
            // SAFETY: `trace` is writable when not NULL (the contract).
            let t = unsafe { &mut *d.trace };
            t.before = tuple(packet(buf, d.headroom as usize, d.len as usize));
        }
        let p = PacketBuf::new(buf, d.headroom as usize, d.len as usize);
        bufs.push(if d.l4_partial != 0 {
            p.with_partial_l4_checksum()
        } else {
            p
        });
    }
    ts.out.clear();
    ts.out.resize(bufs.len(), Disposition::Pass);
    ts.worker.set_tracing(traced);
    ts.worker.process_batch(ns(now), &mut bufs, &mut ts.out);
    // Packets sent to error-drop, per counter: error-drop counts them.
    let mut dropped = [0u32; N_COUNTERS];
    for (i, (d, p)) in descs.iter_mut().zip(bufs.iter_mut()).enumerate() {
        // Every output is written here (C leaves them unset). A pass or
        // forward leaves with the core's length: it may have rewritten the
        // packet in place to another size (the SYN proxy's SYN-ACK). Punts
        // set their own below.
        d.new_len = p.len as u32;
        d.advance = 0;
        d.forward_address = 0;
        let verdict = match ts.out[i] {
            Disposition::Pass => {
                d.next = sys::AFFINITY_NEXT_FEATURE as u16;
                d.error = 0;
                sys::AFFINITY_VERDICT_PASS
            }
            Disposition::Forward(to) => {
                d.next = sys::AFFINITY_NEXT_LOAD_BALANCE as u16;
                d.forward_address = u32::from(to).to_be();
                d.error = Counter::Forwarded as u16;
                sys::AFFINITY_VERDICT_FORWARD
            }
            Disposition::Drop(c) => {
                d.next = sys::AFFINITY_NEXT_DROP as u16;
                d.error = c as u16;
                dropped[c as usize] += 1;
                sys::AFFINITY_VERDICT_DROP
            }
            Disposition::Consumed(c) => {
                d.next = sys::AFFINITY_NEXT_DROP as u16;
                d.error = c as u16;
                dropped[c as usize] += 1;
                sys::AFFINITY_VERDICT_CONSUMED
            }
            Disposition::Punt { to, start } => {
                let end = p.start + p.len;
                let hdr = start.checked_sub(IPV4_UDP_HEADER_LEN);
                let written = hdr.is_some_and(|h| {
                    wire::write_ipv4_udp_header(
                        &mut p.buf[h..start],
                        control_source(),
                        to,
                        end - start,
                        IP_ID.fetch_add(1, Relaxed),
                    )
                });
                match hdr {
                    Some(h) if written => {
                        // The IPv4/UDP/service-message headers are in the
                        // buffer's headroom, in front of the packet.
                        d.advance = h as i32 - d.headroom as i32;
                        d.new_len = (end - h) as u32;
                        d.next = sys::AFFINITY_NEXT_LOOKUP as u16;
                        d.error = Counter::Punted as u16;
                        sys::AFFINITY_VERDICT_PUNT
                    }
                    _ => {
                        // No room for the IPv4/UDP header: sent from a
                        // copy, and this buffer freed under that reason.
                        send_udp(to, &p.buf[start..end]);
                        d.next = sys::AFFINITY_NEXT_DROP as u16;
                        d.error = Counter::PuntCopiedOut as u16;
                        if let Some(st) = STATE.get() {
                            st.shim_counters.add(Counter::PuntCopiedOut, 1);
                        }
                        sys::AFFINITY_VERDICT_CONSUMED
                    }
                }
            }
        };
        if !d.trace.is_null() {
            let decision = ts.worker.decisions().get(i).copied().unwrap_or_default();
            let after_start = (p.start as i64 + i64::from(d.advance)).max(0) as usize;
            // SAFETY: `trace` is writable when not NULL (the contract).
            let t = unsafe { &mut *d.trace };
            fill_trace(t, &decision, verdict, d);
            t.after = tuple(packet(p.buf, after_start, d.new_len as usize));
        }
    }
    // The frame's counter growth, for the node's error counters.
    let now_counts = &ts.worker.counters().0;
    for (i, c) in counts.iter_mut().enumerate() {
        let grown = now_counts[i].wrapping_sub(ts.reported[i]);
        *c = grown
            .saturating_sub(u64::from(dropped[i]))
            .min(u64::from(u32::MAX)) as u32;
    }
    ts.reported = *now_counts;
    ts.bufs = recycle(bufs);
    flush(ts.worker.take_messages());
    // Fragments held for a first fragment decided in this frame.
    send_released(&mut ts.worker);
}

/// The trace record of one packet: what the core matched and decided.
fn fill_trace(
    t: &mut sys::affinity_trace_t,
    decision: &Decision,
    verdict: u32,
    d: &sys::affinity_pkt_t,
) {
    (t.match_, t.match_id) = match decision.matched {
        Matched::None => (sys::AFFINITY_MATCH_NONE, 0),
        Matched::Fixed { slot } => (sys::AFFINITY_MATCH_FIXED, slot as u32),
        Matched::Wildcard { id } => (sys::AFFINITY_MATCH_WILDCARD, id),
    };
    t.action_set = decision.action;
    t.nat = u32::from(decision.nat);
    t.verdict = verdict;
    t.error = u32::from(d.error);
    t.forward_address = d.forward_address;
    t.next = u32::from(d.next);
}
