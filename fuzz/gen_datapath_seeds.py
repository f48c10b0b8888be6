#!/usr/bin/env python3
"""Seed inputs for the datapath fuzz target and the datapath_bench loop:
40 configuration bytes (affinity key, masks, NAT addresses) then 1-8 IPv4
packets (TCP/UDP/ICMP echo, addresses often the key's) separated by 0xfe.
  gen_datapath_seeds.py DIR [COUNT]   (deterministic: seed 16)
fuzz/seeds/datapath holds 16 of the 256 this writes by default."""
import os
import random
import struct
import sys

random.seed(16)
out, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256
os.makedirs(out, exist_ok=True)


def rand_bytes(n):
    return bytes(random.randrange(256) for _ in range(n))


def pkt(src, dst):
    proto = random.choice([6, 17, 1])
    payload = rand_bytes(random.randrange(0, 60))
    if proto == 6:
        flags = random.choice([2, 0x10, 0x12, 0x18, 0x11, 4])
        l4 = struct.pack("!HHIIBBHHH", random.randrange(65536), random.choice([80, 8080, 9000]),
                         random.randrange(2**32), random.randrange(2**32), 0x50, flags, 65535, 0, 0) + payload
    elif proto == 17:
        l4 = struct.pack("!HHHH", random.randrange(65536), 53, 8 + len(payload), 0) + payload
    else:
        l4 = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + payload
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), random.randrange(65536), 0, 64, proto, 0, src, dst)
    return h + l4


for i in range(count):
    cfg = rand_bytes(40)
    src, dst = cfg[1:5], cfg[5:9]
    parts = [pkt(random.choice([src, dst, rand_bytes(4)]), random.choice([src, dst, rand_bytes(4)]))
             for _ in range(random.randrange(1, 9))]
    with open(os.path.join(out, f"seed-{i:03}"), "wb") as f:
        f.write(cfg + b"\xfe".join(parts))
