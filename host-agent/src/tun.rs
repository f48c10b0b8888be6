//! A TUN device (IFF_TUN | IFF_NO_PI): one read = one IPv4 packet.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An attached TUN device.
pub struct Tun {
    file: File,
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name`.
    pub fn open(name: &str) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: FFI ioctl on a valid, owned fd with a properly sized and
        // initialised `struct ifreq` that lives across the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tun { file })
    }

    /// Waits up to `timeout_ms` for a packet to read.
    pub fn wait_readable(&self, timeout_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: FFI poll on one valid pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    pub fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    pub fn write_packet(&self, pkt: &[u8]) -> io::Result<usize> {
        (&self.file).write(pkt)
    }
}
