//! Datagrams a batch per system call (`recvmmsg(2)`, `sendmmsg(2)`).
//!
//! At hundreds of thousands of flows per second the manager's own decision
//! takes about a microsecond and a half per flow; one system call per
//! datagram in and out would cost more than that. Agents send interest
//! matches in bursts (a VPP frame punts many SYNs at once), so a receive
//! usually finds several queued, and the answers go out together.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

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

/// Sends `msgs` (destination, bytes), [`BATCH`] per system call; returns
/// (sent, failed). A datagram the kernel refuses is counted and skipped,
/// never retried forever.
pub fn send_all(sock: &UdpSocket, msgs: &[(SocketAddrV4, Vec<u8>)]) -> (u64, u64) {
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut rest = msgs;
    while !rest.is_empty() {
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
    use super::*;

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
        assert_eq!(send_all(&a, &msgs), (100, 0));
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
        // Nothing queued: WouldBlock, not a block.
        assert_eq!(
            batch.recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    use std::net::SocketAddr;
}
