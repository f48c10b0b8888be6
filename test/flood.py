#!/usr/bin/env python3
"""The flood bench's traffic (test/flood-bench.sh), bounded in count and time.
  flood.py syn HOST PORT RATE SECS      spoofed SYNs (sources in 198.19.0.0/16,
                                        inside 198.18.0.0/15) at RATE per second
                                        for SECS s through a raw socket, never
                                        answered; prints "sent N secs S rate R"
  flood.py connect HOST PORT RATE SECS  new connections at RATE per second for
                                        SECS s, each an HTTP GET answered by a
                                        lab backend; prints "attempts N ok N
                                        failed N" and the failures by reason,
                                        then the successful connections' time
                                        from connect() to the whole answer
                                        (ms: p50, p90, max) and how many took
                                        200 ms or more (a retransmission:
                                        Linux's minimum RTO)
"""
import socket
import struct
import sys
import threading
import time

cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
rate, secs = float(sys.argv[4]), float(sys.argv[5])


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


def syn_template(dst):
    """A SYN from 198.19.0.0:0 with sequence number 0xFFFFFFFF and its
    checksums. Each packet then writes source address low half X, source
    port P and sequence ~X:~P: X + ~X and P + ~P are both 0xFFFF (minus
    zero in ones' complement), so the TCP checksum never changes and the
    loop only writes three fields (pure Python computing each checksum
    would cost more than the send)."""
    src = socket.inet_aton("198.19.0.0")
    tcp = struct.pack("!HHIIBBHHH", 0, port, 0xFFFFFFFF, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return bytearray(ip + tcp)


def fill(pkt, i):
    x, p = i & 0xFFFF, 1024 + (i >> 16) % 60000
    struct.pack_into("!H", pkt, 14, x)
    struct.pack_into("!H", pkt, 20, p)
    struct.pack_into("!HH", pkt, 24, ~x & 0xFFFF, ~p & 0xFFFF)


def check_template(dst):
    """The constant-checksum trick, checked against a full computation."""
    for i in (0, 1, 0x1234, 65535, 65536 * 7 + 99):
        pkt = syn_template(dst)
        fill(pkt, i)
        pseudo = bytes(pkt[12:20]) + struct.pack("!BBH", 0, 6, 20)
        tcp = bytes(pkt[20:36]) + b"\0\0" + bytes(pkt[38:40])
        assert struct.unpack("!H", pkt[36:38])[0] == csum(pseudo + tcp), i


def syn_flood():
    dst = socket.inet_aton(host)
    check_template(dst)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pkt = syn_template(dst)
    total = int(rate * secs)
    sent = errors = 0
    start = time.monotonic()
    end = start + secs
    # Paced in 1 ms steps: each step sends what is due by then (at most
    # 1000 packets late), so the rate holds without a sleep per packet.
    while sent < total:
        now = time.monotonic()
        if now >= end + 1:
            break
        due = min(total, int((now - start) * rate) + 1)
        burst = min(due - sent, 1000)
        for _ in range(burst):
            fill(pkt, sent)
            try:
                raw.sendto(pkt, (host, 0))
            except OSError:
                errors += 1
            sent += 1
        if sent >= due:
            time.sleep(0.001)
    took = time.monotonic() - start
    print(f"sent {sent} secs {took:.2f} rate {sent / took:.0f} errors {errors}", flush=True)


def connect_load():
    results = []
    took_ms = []
    lock = threading.Lock()

    def one():
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                s.settimeout(3)
                s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                data = b""
                while len(data) < 65536:
                    b = s.recv(4096)
                    if not b:
                        break
                    data += b
            body = data.split(b"\r\n\r\n", 1)[-1]
            r = "ok" if body.startswith(b"backend-") else "bad-answer"
            if r == "ok":
                with lock:
                    took_ms.append((time.monotonic() - t0) * 1000)
        except socket.timeout:
            r = "timeout"
        except OSError as e:
            r = type(e).__name__
        with lock:
            results.append(r)

    total = int(rate * secs)
    threads = []
    start = time.monotonic()
    for i in range(total):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout=10)
    ok = results.count("ok")
    reasons = {r: results.count(r) for r in set(results) if r != "ok"}
    unfinished = total - len(results)
    took_ms.sort()

    def pct(q):
        return took_ms[min(len(took_ms) - 1, int(q * len(took_ms)))] if took_ms else 0.0

    slow = sum(1 for t in took_ms if t >= 200)
    print(f"attempts {total} ok {ok} failed {total - ok} unfinished {unfinished} "
          f"reasons {reasons} setup_p50_ms {pct(0.5):.1f} setup_p90_ms {pct(0.9):.1f} "
          f"setup_max_ms {pct(1.0):.1f} slow_200ms {slow}", flush=True)


if cmd == "syn":
    syn_flood()
elif cmd == "connect":
    connect_load()
else:
    sys.exit(__doc__)
