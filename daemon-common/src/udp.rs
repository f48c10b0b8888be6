//! A daemon's UDP socket against the kernel: its receive buffer and the
//! datagrams the kernel dropped because that buffer was full. Both daemons
//! size the buffer for bursts (a manager's resynchronisation, an agent's
//! activity report) and count the kernel's drops, so loss is visible
//! (issue 16, item 6).

use std::net::UdpSocket;

/// Asks for a receive buffer of `bytes` on `sock` (`SO_RCVBUF`); returns
/// the size the kernel granted (Linux reports double what it keeps for
/// data, and caps the request at `net.core.rmem_max`). Errors: the
/// `setsockopt`/`getsockopt` failure.
pub fn set_receive_buffer(sock: &UdpSocket, bytes: usize) -> std::io::Result<usize> {
    let s = socket2::SockRef::from(sock);
    s.set_recv_buffer_size(bytes)?;
    s.recv_buffer_size()
}

/// The kernel's drop count (receive buffer full) summed over the UDP
/// sockets bound to local `port`, from `/proc/net/udp` of the caller's
/// network namespace; `None` if it cannot be read.
pub fn kernel_drops(port: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    Some(drops_in(&text, port))
}

/// [`kernel_drops`] of a `/proc/net/udp` text: the last column ("drops")
/// of each line whose local address (second column, `HEXADDR:HEXPORT`)
/// has `port`.
pub fn drops_in(proc_net_udp: &str, port: u16) -> u64 {
    let want = format!(":{port:04X}");
    proc_net_udp
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&want))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_for_the_port_only() {
        // Two sockets on port 1638 (0x0666), one on 1637 (0x0665).
        let text = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 0A0200C0:0666 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 17
  101: 0B0200C0:0666 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 3
  102: 010200C0:0665 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 99
";
        assert_eq!(drops_in(text, 1638), 20);
        assert_eq!(drops_in(text, 1637), 99);
        assert_eq!(drops_in(text, 53), 0);
    }

    #[test]
    fn the_receive_buffer_is_set() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let granted = set_receive_buffer(&s, 65536).unwrap();
        // Linux keeps double for bookkeeping; never less than asked when
        // under net.core.rmem_max (at least 208 KiB everywhere).
        assert!(granted >= 65536, "{granted}");
    }
}
