//! The data node's per-frame call: the frame's buffers in, read in place
//! ([`BufferLayout`]), the core's decision out — every packet's next slot,
//! and for each packet that is not a plain pass an exception with the
//! counter that says why (the node sets `b->error = node->errors[error]`
//! from it, as nat44-ed does) and what to do to its buffer, the trace
//! record of traced packets, and how much each counter grew in the frame
//! (the node's error counters, so `show errors`, `show affinity stats` and
//! the core count with one list).
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

/// Where the fields the data path reads lie in a `vlib_buffer_t` (byte
/// offsets from the buffer's start; `affinity_buffer_layout_t`, measured by
/// the shim).
#[derive(Clone, Copy)]
pub(super) struct BufferLayout {
    current_data: usize,
    current_length: usize,
    flags: usize,
    data: usize,
    pre_data: usize,
    offload_flag: u32,
    oflags: usize,
    l4_cksum_oflags: u8,
}

impl BufferLayout {
    /// The shim's layout; `None` when it cannot be a buffer's: a field
    /// inside the packet data, or no pre-data area before it.
    pub(super) fn new(l: &sys::affinity_buffer_layout_t) -> Option<Self> {
        let data = l.data as usize;
        let before_data = |at: u32, size: usize| {
            (at as usize)
                .checked_add(size)
                .is_some_and(|end| end <= data)
        };
        let ok = before_data(l.current_data, 2)
            && before_data(l.current_length, 2)
            && before_data(l.flags, 4)
            && before_data(l.oflags, 1)
            && l.pre_data_size as usize <= data
            && l.pre_data_size > 0;
        ok.then_some(BufferLayout {
            current_data: l.current_data as usize,
            current_length: l.current_length as usize,
            flags: l.flags as usize,
            data,
            pre_data: l.pre_data_size as usize,
            offload_flag: l.offload_flag,
            oflags: l.oflags as usize,
            l4_cksum_oflags: l.l4_cksum_oflags as u8,
        })
    }

    /// The packet in buffer `b`: its IPv4 header at `current_data` bytes
    /// past the buffer's data, `current_length` bytes long, with the
    /// pre-data area and whatever precedes `current_data` as headroom. The
    /// slice ends where the packet does, so [`arrived_len`] gives its
    /// length as it came.
    ///
    /// # Safety
    /// `b` points to a `vlib_buffer_t` of this layout that the calling
    /// thread owns for `'a`, whose `current_data` and `current_length`
    /// describe bytes inside it (VPP's own invariant: current_data ≥
    /// -VLIB_BUFFER_PRE_DATA_SIZE, and the packet within the buffer).
    #[inline(always)]
    unsafe fn packet<'a>(&self, b: *mut u8) -> PacketBuf<'a> {
        // SAFETY: the fields lie before the data (checked in `new`) in the
        // buffer `b` points to, by this function's contract.
        let (cd, len, flags, oflags) = unsafe {
            (
                b.add(self.current_data).cast::<i16>().read_unaligned(),
                b.add(self.current_length).cast::<u16>().read_unaligned(),
                b.add(self.flags).cast::<u32>().read_unaligned(),
                b.add(self.oflags).read(),
            )
        };
        let Ok(headroom) = usize::try_from(self.pre_data as isize + isize::from(cd)) else {
            // Before the buffer's pre-data: not a packet VPP can hand a
            // node. Seen as empty (dropped as too short, counted).
            return PacketBuf::new(&mut [], 0, 0);
        };
        // SAFETY: the pre-data area ends where the data begins (the shim
        // asserts it), so `pre_data` bytes before the data and the packet
        // after `current_data` are one allocation, the buffer's, which the
        // caller owns for 'a.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                b.add(self.data - self.pre_data),
                headroom + usize::from(len),
            )
        };
        let p = PacketBuf::new(buf, headroom, usize::from(len));
        let partial = flags & self.offload_flag != 0 && oflags & self.l4_cksum_oflags != 0;
        if partial {
            p.with_partial_l4_checksum()
        } else {
            p
        }
    }
}

/// The length (bytes) packet `p` had when it came: its buffer slice ends
/// where the packet did ([`BufferLayout::packet`]), and the core never
/// moves a packet's start or slice, only its length (a rewrite to another
/// size).
fn arrived_len(p: &PacketBuf<'_>) -> usize {
    p.buf.len().saturating_sub(p.start)
}

/// Processes one frame of `n` buffers (`bufs`, `vlib_buffer_t *` in the
/// layout given at init): writes every packet's next slot into `nexts`
/// (`AFFINITY_NEXT_FEATURE` for a pass), an exception into `exceptions`
/// for each packet that needs more than that, in frame order, returning
/// how many; fills the trace record of each traced packet (`traces[i]` not
/// NULL); and `counts[i]` with how much counter `i` grew in this frame
/// less the packets sent to error-drop under it (error-drop counts those).
/// `now` is `vlib_time_now` (seconds). A panic drops the frame's packets
/// under `drop-internal-error`.
///
/// One pass over the frame: each packet is read from its buffer, not from
/// a descriptor the node filled first and read back afterwards.
///
/// # Safety
/// `bufs` points to `n` buffers, each of the layout given at init and
/// owned by the calling thread for the call; `nexts` and `exceptions` each
/// have room for `n`; `traces` is NULL or points to `n` entries, each NULL
/// or a writable `affinity_trace_t`; `counts` is NULL or points to
/// `AFFINITY_N_ERROR` writable `u32`s. Only thread `thread_index` calls
/// with that index (VPP's threads each run their own frames).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn affinity_rs_process(
    thread_index: u32,
    now: f64,
    bufs: *const *mut std::ffi::c_void,
    n: u32,
    nexts: *mut u16,
    exceptions: *mut sys::affinity_exception_t,
    traces: *const *mut sys::affinity_trace_t,
    counts: *mut u32,
) -> u32 {
    let counts: &mut [u32] = if counts.is_null() {
        &mut []
    } else {
        // SAFETY: AFFINITY_N_ERROR (= N_COUNTERS) u32s, by the contract.
        unsafe { std::slice::from_raw_parts_mut(counts, N_COUNTERS) }
    };
    counts.fill(0);
    if bufs.is_null() || nexts.is_null() || exceptions.is_null() || n == 0 {
        return 0;
    }
    let n = n as usize;
    // SAFETY: `n` entries each, by this function's contract.
    let (bufs, nexts, exceptions) = unsafe {
        (
            std::slice::from_raw_parts(bufs.cast::<*mut u8>(), n),
            std::slice::from_raw_parts_mut(nexts, n),
            std::slice::from_raw_parts_mut(exceptions, n),
        )
    };
    let traces = if traces.is_null() {
        None
    } else {
        // SAFETY: `n` entries, by this function's contract.
        Some(unsafe { std::slice::from_raw_parts(traces, n) })
    };
    // Every packet passes unless decided otherwise (before init, nothing
    // is decided).
    nexts.fill(sys::AFFINITY_NEXT_FEATURE as u16);
    let Some(st) = STATE.get() else {
        return 0;
    };
    let Some(thread) = st.workers.get(thread_index as usize) else {
        return 0;
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = thread.lock();
        let ts = &mut *guard;
        let frame = Frame {
            bufs,
            traces,
            layout: &st.layout,
        };
        // SAFETY: by this function's contract, each buffer and trace.
        unsafe { process(ts, now, frame, nexts, exceptions, counts) }
    }));
    match r {
        Ok(n_exc) => n_exc as u32,
        Err(_) => {
            // A bug must not take the router down: drop this frame's
            // packets, under their own reason.
            for (i, (next, x)) in nexts.iter_mut().zip(exceptions.iter_mut()).enumerate() {
                *next = sys::AFFINITY_NEXT_DROP as u16;
                *x = exception(i, 0);
                x.error = Counter::DropInternalError as u16;
            }
            counts.fill(0);
            st.shim_counters.add(Counter::DropInternalError, n as u64);
            n as u32
        }
    }
}

/// A frame's buffers, their trace records and the buffers' layout.
struct Frame<'f> {
    bufs: &'f [*mut u8],
    traces: Option<&'f [*mut sys::affinity_trace_t]>,
    layout: &'f BufferLayout,
}

/// The exception of packet `i`, `new_len` bytes long, with nothing else
/// set yet.
fn exception(i: usize, new_len: usize) -> sys::affinity_exception_t {
    sys::affinity_exception_t {
        index: i as u32,
        advance: 0,
        new_len: new_len as u32,
        forward_address: 0,
        error: 0,
    }
}

/// [`affinity_rs_process`] once the state is found; returns how many
/// exceptions it wrote.
///
/// # Safety
/// As for [`affinity_rs_process`]: each buffer of `frame` has its layout
/// and is this thread's for the call, and each trace entry is NULL or
/// writable.
unsafe fn process(
    ts: &mut ThreadState,
    now: f64,
    frame: Frame<'_>,
    nexts: &mut [u16],
    exceptions: &mut [sys::affinity_exception_t],
    counts: &mut [u32],
) -> usize {
    let Frame {
        bufs: raw,
        traces,
        layout,
    } = frame;
    let mut bufs = recycle(std::mem::take(&mut ts.bufs));
    // No prefetch of the buffers' headers or packet data: a packet reaches
    // the ip4-unicast arc from ip4-input, which has just read both, so they
    // are at worst in L2 (perf still shows this loop waiting on the header
    // loads, but a header-only prefetch 16 ahead measured no better). The
    // prefetches cost more than they saved: dropping the header prefetch 8
    // ahead and the data prefetch 4 ahead, as cnat's nodes do, took the
    // node from 99-109 to 93-95 clocks/packet at 1.18 M flows (stop 23,
    // alternated 3x).
    // One reservation for the frame (an exact-size iterator), not a
    // capacity check per packet.
    // A copy: the loop keeps the offsets in registers instead of reading
    // them through the reference after each packet's stores.
    let layout = *layout;
    bufs.extend(raw.iter().map(move |&b| {
        // SAFETY: a buffer of the frame, this thread's for the call.
        unsafe { layout.packet(b) }
    }));
    let traced = traces.is_some_and(|t| t.iter().any(|t| !t.is_null()));
    if let Some(traces) = traces.filter(|_| traced) {
        for (t, p) in traces.iter().zip(bufs.iter()) {
            // SAFETY: NULL or writable, by the contract.
            if let Some(t) = unsafe { t.as_mut() } {
                t.before = tuple(packet(p.buf, p.start, p.len));
            }
        }
    }
    ts.out.clear();
    ts.out.resize(bufs.len(), Disposition::Pass);
    ts.worker.set_tracing(traced);
    ts.worker.process_batch(ns(now), &mut bufs, &mut ts.out);
    // Packets sent to error-drop, per counter: error-drop counts them.
    let mut dropped = [0u32; N_COUNTERS];
    let mut n_exc = 0;
    // Every packet a plain pass (the common case): each next slot is
    // written already, and there is no exception to report.
    let all_plain = !traced && ts.worker.plain_passes() == bufs.len();
    let look = if all_plain { 0 } else { bufs.len() };
    for (i, p) in bufs[..look].iter_mut().enumerate() {
        let d = ts.out[i];
        // A pass at the packet's own length needs nothing but its next
        // slot, written for every packet already: the common case.
        let plain_pass = d == Disposition::Pass && p.len == arrived_len(p);
        if plain_pass && !traced {
            continue;
        }
        let mut x = exception(i, p.len);
        let (next, verdict) = match d {
            Disposition::Pass => (sys::AFFINITY_NEXT_FEATURE, sys::AFFINITY_VERDICT_PASS),
            Disposition::Forward(to) => {
                x.forward_address = u32::from(to).to_be();
                x.error = Counter::Forwarded as u16;
                (
                    sys::AFFINITY_NEXT_LOAD_BALANCE,
                    sys::AFFINITY_VERDICT_FORWARD,
                )
            }
            Disposition::Drop(c) => {
                x.error = c as u16;
                dropped[c as usize] += 1;
                (sys::AFFINITY_NEXT_DROP, sys::AFFINITY_VERDICT_DROP)
            }
            Disposition::Consumed(c) => {
                x.error = c as u16;
                dropped[c as usize] += 1;
                (sys::AFFINITY_NEXT_DROP, sys::AFFINITY_VERDICT_CONSUMED)
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
                        x.advance = h as i32 - p.start as i32;
                        x.new_len = (end - h) as u32;
                        x.error = Counter::Punted as u16;
                        (sys::AFFINITY_NEXT_LOOKUP, sys::AFFINITY_VERDICT_PUNT)
                    }
                    _ => {
                        // No room for the IPv4/UDP header: sent from a
                        // copy, and this buffer freed under that reason.
                        send_udp(to, &p.buf[start..end]);
                        x.error = Counter::PuntCopiedOut as u16;
                        if let Some(st) = STATE.get() {
                            st.shim_counters.add(Counter::PuntCopiedOut, 1);
                        }
                        (sys::AFFINITY_NEXT_DROP, sys::AFFINITY_VERDICT_CONSUMED)
                    }
                }
            }
        };
        nexts[i] = next as u16;
        if let Some(t) = traces.and_then(|t| t.get(i)) {
            // SAFETY: NULL or writable, by the contract.
            if let Some(t) = unsafe { t.as_mut() } {
                let decision = ts.worker.decisions().get(i).copied().unwrap_or_default();
                let after_start = (p.start as i64 + i64::from(x.advance)).max(0) as usize;
                fill_trace(t, &decision, verdict, &x, next);
                t.after = tuple(packet(p.buf, after_start, x.new_len as usize));
            }
        }
        if !plain_pass {
            if let Some(slot) = exceptions.get_mut(n_exc) {
                *slot = x;
                n_exc += 1;
            }
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
    n_exc
}

/// The trace record of one packet: what the core matched and decided, and
/// the next slot it gave (the node overwrites it with the one taken).
fn fill_trace(
    t: &mut sys::affinity_trace_t,
    decision: &Decision,
    verdict: u32,
    x: &sys::affinity_exception_t,
    next: u32,
) {
    (t.match_, t.match_id) = match decision.matched {
        Matched::None => (sys::AFFINITY_MATCH_NONE, 0),
        Matched::Fixed { slot } => (sys::AFFINITY_MATCH_FIXED, slot as u32),
        Matched::Wildcard { id } => (sys::AFFINITY_MATCH_WILDCARD, id),
    };
    t.action_set = decision.action;
    t.nat = u32::from(decision.nat);
    t.verdict = verdict;
    t.error = u32::from(x.error);
    t.forward_address = x.forward_address;
    t.next = next;
}
