//! What the agent sends from VPP: service messages (UDP from its control
//! address) and whole IPv4 packets, through the shim's
//! `affinity_shim_send_ip` (ip4-lookup).

use super::{sys, AGENT_ADDR, IP_ID, LISTEN_PORT};
use affinity_forwarding_agent::wire::{self, IPV4_UDP_HEADER_LEN};
use affinity_forwarding_agent::{Disposition, Worker};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;

/// The agent's control address and port: the source of everything it sends.
pub(super) fn control_source() -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(AGENT_ADDR.load(Relaxed))),
        LISTEN_PORT.load(Relaxed),
    )
}

/// Sends a UDP datagram from the agent's control address via ip4-lookup.
pub(super) fn send_udp(to: SocketAddrV4, payload: &[u8]) {
    let src = control_source();
    let mut pkt = vec![0u8; IPV4_UDP_HEADER_LEN + payload.len()];
    if !wire::write_ipv4_udp_header(
        &mut pkt,
        src,
        to,
        payload.len(),
        IP_ID.fetch_add(1, Relaxed),
    ) {
        return;
    }
    pkt[IPV4_UDP_HEADER_LEN..].copy_from_slice(payload);
    send_ip(&pkt);
}

pub(super) fn send_ip(pkt: &[u8]) {
    // SAFETY: FFI call; the shim copies `len` bytes from a valid slice into
    // a fresh vlib buffer before returning.
    unsafe { sys::affinity_shim_send_ip(pkt.as_ptr(), pkt.len() as u32) };
}

/// Sends the packets a worker held and has released
/// (`Worker::take_released`), as returned packets are sent: fragments held
/// until their first fragment's decision came, and a SYN-proxied
/// connection's early data, released by its splice (the backend's SYN-ACK
/// in a frame, or a returned packet).
pub(super) fn send_released(w: &mut Worker) {
    for (pkt, d) in w.take_released() {
        match d {
            Disposition::Pass | Disposition::Forward(_) => send_ip(&pkt),
            Disposition::Punt { to, start } => send_udp(to, pkt.get(start..).unwrap_or_default()),
            Disposition::Drop(_) | Disposition::Consumed(_) => {}
        }
    }
}

pub(super) fn flush(messages: Vec<(SocketAddrV4, Vec<u8>)>) {
    for (to, m) in messages {
        send_udp(to, &m);
    }
}
