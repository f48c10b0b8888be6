//! Datagrams a batch per system call (`recvmmsg(2)`, `sendmmsg(2)`).
//!
//! At hundreds of thousands of flows per second the manager's own decision
//! takes over a microsecond per flow; one system call per
//! datagram in and out would cost more than that. Agents send interest
//! matches in bursts (a VPP frame punts many SYNs at once), so a receive
//! usually finds several queued, and the answers go out together.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest datagram received (the IPv4 maximum).
pub const MAX_DATAGRAM: usize = 65536;

/// Receive buffers for one batch.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    lens: [usize; BATCH],
    from: [Option<SocketAddrV4>; BATCH],
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            lens: [0; BATCH],
            from: [None; BATCH],
            n: 0,
        }
    }
}

impl RecvBatch {
    /// Receives up to [`BATCH`] queued datagrams without blocking (the
    /// socket must be non-blocking); how many arrived. `WouldBlock` when none.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.n = 0;
        // SAFETY: all-zero is a valid value for this plain C struct.
        let mut addrs: [libc::sockaddr_in; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs = headers(&mut addrs, &mut iovs);
        // SAFETY: FFI recvmmsg(2) on a valid fd. Every header points at an
        // address buffer and one iovec over a live buffer of the stated
        // length, all of which outlive the call; the kernel writes at most
        // BATCH headers.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (r as usize).min(BATCH);
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
            let a = &addrs[i];
            self.from[i] = (a.sin_family == libc::AF_INET as libc::sa_family_t).then(|| {
                SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )
            });
        }
        self.n = n;
        Ok(n)
    }

    /// The datagrams of the last [`RecvBatch::recv`]: sender (None when not
    /// IPv4) and bytes.
    pub fn iter(&self) -> impl Iterator<Item = (Option<SocketAddrV4>, &[u8])> {
        (0..self.n).map(|i| (self.from[i], &self.bufs[i][..self.lens[i]]))
    }
}

/// Datagrams received and not yet handled, oldest first, bounded in count
/// and in bytes: past either bound the newest is dropped and counted
/// (drop-newest, as a full socket buffer does, but counted by the manager
/// and bounded in its own terms). The daemon reads its socket into it
/// faster than it handles what it holds, so under overload its own limit,
/// not the kernel's buffer, decides what is dropped, and each round's work
/// stays bounded.
#[derive(Debug)]
pub struct RecvQueue {
    q: VecDeque<(SocketAddrV4, Vec<u8>)>,
    bytes: usize,
    limit: usize,
    byte_limit: usize,
    dropped: u64,
}

impl RecvQueue {
    /// A queue of at most `limit` datagrams and `byte_limit` bytes of them.
    pub fn new(limit: usize, byte_limit: usize) -> RecvQueue {
        RecvQueue {
            q: VecDeque::new(),
            bytes: 0,
            limit,
            byte_limit,
            dropped: 0,
        }
    }

    /// Its limits: (datagrams, bytes).
    pub fn limits(&self) -> (usize, usize) {
        (self.limit, self.byte_limit)
    }

    /// Sets the limits (a reload); what it holds beyond them stays until
    /// handled.
    pub fn set_limits(&mut self, limit: usize, byte_limit: usize) {
        self.limit = limit;
        self.byte_limit = byte_limit;
    }

    /// Queues a copy of `bytes` from `from` at the back; false (and
    /// counted as dropped) when the queue is at either limit.
    pub fn push(&mut self, from: SocketAddrV4, bytes: &[u8]) -> bool {
        if self.q.len() >= self.limit || self.bytes + bytes.len() > self.byte_limit {
            self.dropped += 1;
            return false;
        }
        self.bytes += bytes.len();
        self.q.push_back((from, bytes.to_vec()));
        true
    }

    /// The oldest datagram, taken out.
    pub fn pop(&mut self) -> Option<(SocketAddrV4, Vec<u8>)> {
        let d = self.q.pop_front()?;
        self.bytes -= d.1.len();
        Some(d)
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Datagrams dropped since the last call (the count is reset).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Reads what `sock` (non-blocking) has queued into the queue, through
    /// `batch`, until the socket is empty or `max_reads` datagrams were
    /// read (bounds one round's reading under a flood); datagrams past the
    /// limits are dropped (counted), non-IPv4 senders skipped. How many
    /// were read.
    pub fn fill(&mut self, sock: &UdpSocket, batch: &mut RecvBatch, max_reads: usize) -> usize {
        let mut read = 0;
        while read < max_reads {
            let Ok(n) = batch.recv(sock) else {
                break;
            };
            for (from, bytes) in batch.iter() {
                if let Some(from) = from {
                    self.push(from, bytes);
                }
            }
            read += n.max(1);
        }
        read
    }
}

/// Sends `msgs` (destination, bytes), [`BATCH`] per system call, or with
/// `gso` runs to one destination as one segmented send; returns
/// (sent, failed). A datagram the kernel refuses is counted and skipped,
/// never retried forever.
pub fn send_all(sock: &UdpSocket, msgs: &[(SocketAddrV4, Vec<u8>)], gso: bool) -> (u64, u64) {
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut rest = msgs;
    while !rest.is_empty() {
        let run = if gso { same_size_run(rest) } else { 1 };
        if run >= GSO_MIN_RUN && GSO_OK.load(Relaxed) {
            match send_segmented(sock, &rest[..run]) {
                Ok(()) => {
                    sent += run as u64;
                    rest = &rest[run..];
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tracing::debug!("send buffer full; {run} datagrams dropped");
                    failed += run as u64;
                    rest = &rest[run..];
                    continue;
                }
                Err(e) => {
                    // This run goes datagram by datagram below (where a
                    // route error is counted per datagram). Errors that say
                    // GSO itself is unavailable (old kernel, odd device)
                    // turn it off for good.
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
                    ) {
                        tracing::debug!(error = %e, "UDP segmentation offload unavailable");
                        GSO_OK.store(false, Relaxed);
                    }
                }
            }
        }
        let chunk = &rest[..rest.len().min(BATCH)];
        let mut addrs: Vec<libc::sockaddr_in> = chunk.iter().map(|(to, _)| sockaddr(to)).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(_, b)| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs = headers(&mut addrs, &mut iovs);
        // SAFETY: FFI sendmmsg(2) on a valid fd; every header points at a
        // live address and one iovec over live bytes (only read by the
        // kernel), all outliving the call.
        let r =
            unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
        if r <= 0 {
            // The first datagram was refused (or the socket is full and
            // non-blocking): count it and go on with the next.
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                wait_writable(sock, 10);
                if let Ok(n) = sock.send_to(&chunk[0].1, chunk[0].0) {
                    sent += (n > 0) as u64;
                    rest = &rest[1..];
                    continue;
                }
            }
            tracing::debug!(to = %chunk[0].0, error = %e, "send failed");
            failed += 1;
            rest = &rest[1..];
            continue;
        }
        let n = (r as usize).min(chunk.len());
        sent += n as u64;
        rest = &rest[n..];
    }
    (sent, failed)
}

/// Answers to one agent's burst of new flows have one destination and,
/// for flows of one service, one size: such a run goes out as a single
/// UDP GSO send (`UDP_SEGMENT`), which the kernel splits into the same
/// datagrams after one pass through the socket and IP layers.
const GSO_MIN_RUN: usize = 4;
/// Segments per GSO send (the kernel's limit is 64 on older versions).
const GSO_MAX_SEGMENTS: usize = 64;
/// Segment size limit: within a 1500-byte path MTU, so the kernel never
/// refuses a run for being larger than the route allows.
const GSO_MAX_SIZE: usize = 1472;
/// Bytes of one GSO send: the largest UDP payload of an IPv4 datagram.
const GSO_MAX_BYTES: usize = 65507;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
static GSO_OK: AtomicBool = AtomicBool::new(true);

/// Length of the run at the head of `msgs` that one GSO send can carry.
fn same_size_run(msgs: &[(SocketAddrV4, Vec<u8>)]) -> usize {
    let Some((to, first)) = msgs.first() else {
        return 0;
    };
    if first.is_empty() || first.len() > GSO_MAX_SIZE {
        return 1;
    }
    // One UDP datagram's payload bounds the whole run.
    let max = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / first.len());
    msgs.iter()
        .take(max)
        .take_while(|(t, b)| t == to && b.len() == first.len())
        .count()
}

/// Sends equal-sized datagrams to one destination with one sendmsg(2).
fn send_segmented(sock: &UdpSocket, run: &[(SocketAddrV4, Vec<u8>)]) -> io::Result<()> {
    let seg = run[0].1.len();
    let mut data = Vec::with_capacity(seg * run.len());
    for (_, b) in run {
        data.extend_from_slice(b);
    }
    let mut addr = sockaddr(&run[0].0);
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // A cmsghdr followed by the u16 segment size, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // SAFETY: msg_control points at `control` (32 bytes, u64-aligned),
    // large enough for CMSG_SPACE(2); CMSG_FIRSTHDR/CMSG_DATA stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
    }
    for attempt in 0..3 {
        if attempt > 0 {
            wait_writable(sock, 10);
        }
        // SAFETY: FFI sendmsg(2) on a valid fd with a header whose pointers
        // (address, one iovec over `data`, control) outlive the call.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
    }
    Err(io::ErrorKind::WouldBlock.into())
}

/// One message header per (address, iovec) pair, pointing at them.
fn headers(addrs: &mut [libc::sockaddr_in], iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    addrs
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|(a, iov)| {
            // SAFETY: all-zero is a valid value for this plain C struct.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

fn sockaddr(a: &SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid value for this plain C struct.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

/// Waits up to `ms` for the socket to accept more datagrams.
fn wait_writable(s: &UdpSocket, ms: i32) {
    wait(s, libc::POLLOUT, ms)
}

/// Waits up to `ms` for a datagram to arrive.
pub fn wait_readable(s: &UdpSocket, ms: i32) {
    wait(s, libc::POLLIN, ms)
}

/// Waits up to `ms` for a datagram on `s` or for `other` to become
/// readable (the daemon's wake-up stream), whichever comes first.
pub fn wait_readable_either(s: &UdpSocket, other: &impl AsRawFd, ms: i32) {
    let mut pfds = [s.as_raw_fd(), other.as_raw_fd()].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: FFI poll(2) on an array of two valid pollfds that outlives
    // the call; the count is the array's length.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
}

fn wait(s: &UdpSocket, events: libc::c_short, ms: i32) {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: FFI poll(2) on one valid pollfd that outlives the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

#[cfg(test)]
mod tests {
    use super::{send_all, RecvBatch, RecvQueue, BATCH};
    use std::io;
    use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn a_burst_goes_out_and_comes_back_in_batches() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let SocketAddr::V4(to) = b.local_addr().unwrap() else {
            unreachable!()
        };
        let SocketAddr::V4(from) = a.local_addr().unwrap() else {
            unreachable!()
        };
        let msgs: Vec<(SocketAddrV4, Vec<u8>)> =
            (0..100u8).map(|i| (to, vec![i; 1 + i as usize])).collect();
        assert_eq!(send_all(&a, &msgs, true), (100, 0));
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..100 {
            match batch.recv(&b) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    for (f, bytes) in batch.iter() {
                        assert_eq!(f, Some(from));
                        got.push(bytes.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() == 100 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 100);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g, &vec![i as u8; 1 + i]);
        }
        // A run of equal-sized datagrams to one destination goes out as
        // one segmented send and arrives as the same datagrams.
        let same: Vec<(SocketAddrV4, Vec<u8>)> = (0..70u8).map(|i| (to, vec![i; 200])).collect();
        assert_eq!(super::same_size_run(&same), super::GSO_MAX_SEGMENTS);
        // Large messages: the run stops at one datagram's worth of bytes.
        let big: Vec<(SocketAddrV4, Vec<u8>)> = (0..64).map(|_| (to, vec![0; 1400])).collect();
        assert_eq!(super::same_size_run(&big), 65507 / 1400);
        assert_eq!(send_all(&a, &same, true), (70, 0));
        assert!(
            super::GSO_OK.load(Relaxed),
            "UDP GSO works on Linux >= 4.18"
        );
        let mut got = Vec::new();
        for _ in 0..100 {
            match batch.recv(&b) {
                Ok(_) => got.extend(batch.iter().map(|(_, bytes)| bytes.to_vec())),
                Err(_) if got.len() == 70 => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(got.len(), 70);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g, &vec![i as u8; 200]);
        }
        // Nothing queued: WouldBlock, not a block.
        assert_eq!(
            batch.recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn the_receive_queue_keeps_the_oldest_and_drops_the_newest_past_its_limits() {
        let from = SocketAddrV4::new(std::net::Ipv4Addr::new(192, 0, 2, 1), 1637);
        // By count: 3 datagrams.
        let mut q = RecvQueue::new(3, 1 << 20);
        for i in 0..5u8 {
            assert_eq!(q.push(from, &[i]), i < 3);
        }
        assert_eq!((q.len(), q.take_dropped(), q.take_dropped()), (3, 2, 0));
        assert_eq!(q.pop(), Some((from, vec![0])), "oldest first");
        assert!(q.push(from, &[9]), "room again after one was handled");
        let rest: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|(_, b)| b[0]).collect();
        assert_eq!(rest, [1, 2, 9]);
        assert!(q.is_empty());
        // By bytes: 1000 bytes hold two 400-byte datagrams, not a third;
        // a smaller one still fits.
        let mut q = RecvQueue::new(100, 1000);
        assert!(q.push(from, &[0; 400]) && q.push(from, &[0; 400]));
        assert!(!q.push(from, &[0; 400]));
        assert!(q.push(from, &[0; 200]));
        assert_eq!((q.len(), q.take_dropped()), (3, 1));
        q.pop();
        assert!(q.push(from, &[0; 400]), "bytes freed by a pop");
    }

    #[test]
    fn filling_from_a_socket_past_the_limit_drops_and_counts_the_newest() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let SocketAddr::V4(to) = b.local_addr().unwrap() else {
            unreachable!()
        };
        let msgs: Vec<(SocketAddrV4, Vec<u8>)> = (0..200u8).map(|i| (to, vec![i; 10])).collect();
        assert_eq!(send_all(&a, &msgs, false), (200, 0));
        let mut batch = RecvBatch::default();
        let mut q = RecvQueue::new(50, 1 << 20);
        // Bounded: 100 rounds of at most 10 ms for the 200 to arrive.
        let mut read = 0;
        for _ in 0..100 {
            read += q.fill(&b, &mut batch, 1000);
            if read >= 200 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(read, 200);
        assert_eq!((q.len(), q.take_dropped()), (50, 150));
        let kept: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|(_, b)| b[0]).collect();
        assert_eq!(
            kept,
            (0..50).collect::<Vec<u8>>(),
            "the oldest 50, in order"
        );
        // A read bound stops a round early: 70 queued, 64 read (one batch).
        let more: Vec<(SocketAddrV4, Vec<u8>)> = (0..70u8).map(|i| (to, vec![i; 10])).collect();
        assert_eq!(send_all(&a, &more, false), (70, 0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut q = RecvQueue::new(1000, 1 << 20);
        assert_eq!(q.fill(&b, &mut batch, 1), BATCH);
        assert_eq!(q.fill(&b, &mut batch, 1000), 70 - BATCH);
    }
}
