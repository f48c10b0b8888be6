#!/usr/bin/env python3
"""Sends N IP-packet-only service messages of one size as ONE UDP GSO send
(what a manager's burst of answers looks like), from SRC to AGENT:1637.
Each message returns a 64-byte IPv4 packet (protocol 253, for experiments)
to TARGET, so an agent that applies them all counts N returned packets.
  gso_burst.py SRC AGENT TARGET N
"""
import socket
import struct
import sys

src, agent, target, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def message(seq):
    ip = (bytes([0x45, 0, 0, 64, 0, 0, 0, 0, 64, 253, 0, 0])
          + socket.inet_aton(src) + socket.inet_aton(target) + bytes(44))
    seg = struct.pack("!HH", 15, 4 + len(ip)) + ip  # IP packet segment
    # version 1, type 6 (IP packet only), length, family IPv4, flags, reserved, sequence
    return struct.pack("!BBHBBHQ", 1, 6, 16 + len(seg), 1, 0, 0, seq) + seg


msgs = [message(1000 + i) for i in range(n)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setsockopt(socket.IPPROTO_UDP, 103, len(msgs[0]))  # UDP_SEGMENT
s.sendto(b"".join(msgs), (agent, 1637))
