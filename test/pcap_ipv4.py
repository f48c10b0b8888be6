"""The IPv4 packets of a lab capture, for the VPP checks' summaries.

Reads a libpcap file of Ethernet frames, as VPP's `packet-generator
capture` writes it, and gives each IPv4 packet with its transport segment
and whether a receiver would take it: the IPv4 header's and the TCP
segment's one's-complement sums (RFC 1071; the pseudo-header of RFC 9293
section 3.1) both come to 0xffff. Imported by test/vpp-*-check.sh from the
repository's root.
"""
import struct


def csum(b):
    """The one's-complement sum of `b`'s 16-bit big-endian words, folded
    to 16 bits (a trailing odd byte padded with zero)."""
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def frames(path):
    """Each captured frame's bytes (libpcap: a 24-byte file header, then a
    16-byte record header before each frame)."""
    data = open(path, "rb").read()
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        yield data[off + 16: off + 16 + incl]
        off += 16 + incl


def tcp_packets(path):
    """(frame, IPv4 packet, transport segment, valid) for each IPv4 frame
    of the capture at `path`; valid when it is TCP with both checksums
    right. The segment ends where the IPv4 total length says."""
    for f in frames(path):
        if struct.unpack_from("!H", f, 12)[0] != 0x0800:
            continue
        ip = f[14:]
        ihl = (ip[0] & 15) * 4
        tot = struct.unpack_from("!H", ip, 2)[0]
        l4 = ip[ihl:tot]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, ip[9], len(l4))
        valid = csum(ip[:ihl]) == 0xffff and ip[9] == 6 and csum(pseudo + l4) == 0xffff
        yield f, ip, l4, valid
