#!/usr/bin/env python3
"""Lab traffic: bounded in count and time.
  client.py http HOST PORT COUNT           one GET per connection, prints each body
  client.py udp HOST PORT COUNT [SPORT]    datagrams from one source port, prints replies
  client.py hold HOST PORT GO_FILE OUT     one TCP connection: a line now, another once GO_FILE exists
  client.py first-success HOST PORT SECS   seconds until a new connection succeeds
  client.py first-served HOST PORT SECS    the same, with a new attempt every 10 ms
                                           while earlier ones are pending
  client.py udp-stream HOST PORT SECS SPORT GAP
                                           a datagram every GAP s for SECS s from one
                                           port; prints "T backend-N" per reply (T: s since start)
  client.py reuse HOST PORT SPORT WAIT     GET, close, reconnect from the same source port
                                           at once, wait WAIT s, GET again; prints both bodies
  client.py streams HOST PORT N STOP_FILE
                                           N held connections to a line echo, each sending
                                           a line every 10 ms until STOP_FILE exists (at
                                           most 300 s); prints "conns=N ok=.. reset=.. stalled=.. lines=.."
  client.py synflood HOST PORT COUNT RATE  COUNT SYNs from spoofed 198.19.x.y sources at
                                           RATE per second (raw socket), never answered
"""
import errno
import os
import selectors
import socket
import sys
import time

cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


def fetch(c):
    """One HTTP/1.0 GET / on the connected socket `c`: the body, stripped."""
    c.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        data += b
    return data.split(b"\r\n\r\n", 1)[-1].decode().strip()


def get():
    with socket.create_connection((host, port), timeout=2) as s:
        body = fetch(s)
        peer = s.getpeername()
    return body, peer


if cmd == "http":
    for _ in range(int(sys.argv[4])):
        try:
            body, peer = get()
            print(f"{body} peer={peer[0]}:{peer[1]}", flush=True)
        except OSError as e:
            print(f"ERROR {e}", flush=True)
elif cmd == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if len(sys.argv) > 5:
        s.bind(("", int(sys.argv[5])))
    s.settimeout(2)
    for i in range(int(sys.argv[4])):
        s.sendto(f"q{i}".encode(), (host, port))
        try:
            data, peer = s.recvfrom(2048)
            print(f"{data.decode()} peer={peer[0]}:{peer[1]}", flush=True)
        except OSError as e:
            print(f"ERROR {e}", flush=True)
elif cmd == "udp-stream":
    secs, sport, gap = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", sport))
    s.settimeout(gap)
    start = time.time()
    i = 0
    while time.time() - start < secs:
        sent = time.time()
        s.sendto(f"q{i}".encode(), (host, port))
        i += 1
        try:
            data, peer = s.recvfrom(2048)
            print(f"{sent - start:.2f} {data.decode().split()[0]}", flush=True)
        except OSError:
            print(f"{sent - start:.2f} none", flush=True)
        time.sleep(max(0.0, gap - (time.time() - sent)))
elif cmd == "reuse":
    sport, wait = int(sys.argv[4]), float(sys.argv[5])

    def conn():
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind(("", sport))
        c.settimeout(3)
        c.connect((host, port))
        return c

    try:
        c = conn()
        print(f"first {fetch(c)}", flush=True)
        c.close()
        time.sleep(0.3)
        c = conn()
        time.sleep(wait)
        print(f"second {fetch(c)}", flush=True)
        c.close()
    except OSError as e:
        print(f"ERROR {e}", flush=True)
elif cmd == "synflood":
    import struct

    count, rate = int(sys.argv[4]), float(sys.argv[5])

    def csum(b):
        if len(b) % 2:
            b += b"\0"
        t = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while t >> 16:
            t = (t & 0xFFFF) + (t >> 16)
        return ~t & 0xFFFF

    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst = socket.inet_aton(host)
    start = time.time()
    for i in range(count):
        src = socket.inet_aton(f"198.19.{(i >> 8) & 0xFF}.{i & 0xFF}")
        sport = 1024 + (i % 60000)
        tcp = struct.pack("!HHIIBBHHH", sport, port, i, 0, 5 << 4, 0x02, 65535, 0, 0)
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xFFFF, 0, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        raw.sendto(ip + tcp, (host, 0))
        # Bounded rate: never ahead of COUNT/RATE seconds.
        ahead = (i + 1) / rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
    print(f"sent {count} in {time.time() - start:.1f}s", flush=True)
elif cmd == "hold":
    go, out = sys.argv[4], sys.argv[5]
    with open(out, "w") as o:
        try:
            # Establishing the connection is not what the caller tests (the
            # hold is): retry a failed connect within a bounded time.
            end = time.time() + 8
            while True:
                try:
                    s = socket.create_connection((host, port), timeout=3)
                    break
                except OSError as e:
                    if time.time() >= end:
                        raise
                    o.write(f"retry {e}\n"); o.flush()
                    time.sleep(0.2)
            s.settimeout(5)
            f = s.makefile("rwb")
            f.write(b"before\n"); f.flush()
            o.write(f.readline().decode()); o.flush()
            deadline = time.time() + 60
            while not os.path.exists(go) and time.time() < deadline:
                time.sleep(0.05)
            f.write(b"after\n"); f.flush()
            o.write(f.readline().decode()); o.flush()
        except OSError as e:
            o.write(f"ERROR {e}\n")
elif cmd == "first-success":
    start = time.time()
    limit = float(sys.argv[4])
    while time.time() - start < limit:
        try:
            s = socket.create_connection((host, port), timeout=0.2)
            s.close()
            print(f"{time.time() - start:.3f}")
            sys.exit(0)
        except OSError:
            time.sleep(0.02)
    print("never")
    sys.exit(1)
elif cmd == "first-served":
    # Overlapping attempts: a SYN lost while no manager serves the virtual
    # address leaves its connect pending (TCP retries after 1 s), so one
    # attempt at a time measures its timeout, not the takeover. A new
    # attempt every 10 ms, each abandoned after 1 s (at most ~100 open),
    # reports when the service first answered, to about 10 ms.
    start = time.time()
    limit = float(sys.argv[4])
    sel = selectors.DefaultSelector()
    pending = {}
    next_try = start
    done = None
    while done is None and time.time() - start < limit:
        now = time.time()
        if now >= next_try:
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex((host, port))
            if err in (0, errno.EINPROGRESS):
                sel.register(s, selectors.EVENT_WRITE)
                pending[s] = now
            else:
                s.close()
            next_try = now + 0.01
        for key, _ in sel.select(timeout=max(0.0, next_try - time.time())):
            s = key.fileobj
            sel.unregister(s)
            del pending[s]
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and done is None:
                done = time.time() - start
            s.close()
        for s, t0 in list(pending.items()):
            if time.time() - t0 > 1.0:
                sel.unregister(s)
                del pending[s]
                s.close()
    for s in pending:
        s.close()
    if done is None:
        print("never")
        sys.exit(1)
    print(f"{done:.3f}")
elif cmd == "streams":
    import threading
    n, stop = int(sys.argv[4]), sys.argv[5]
    limit = time.time() + 300
    results, lines = [], [0]
    lock = threading.Lock()

    def stream(i):
        # Connect (retried: establishing is not what is tested), then a
        # line every 10 ms; a reply may wait out an agent restart (TCP
        # retransmits), a reset ends the connection and is what counts.
        end = time.time() + 10
        while True:
            try:
                s = socket.create_connection((host, port), timeout=3)
                break
            except OSError:
                if time.time() >= end:
                    with lock:
                        results.append("noconnect")
                    return
                time.sleep(0.2)
        s.settimeout(30)
        f = s.makefile("rwb")
        k = 0
        try:
            while not os.path.exists(stop) and time.time() < limit:
                f.write(f"c{i}-{k}\n".encode())
                f.flush()
                line = f.readline()
                if not line:
                    raise ConnectionResetError("closed by peer")
                k += 1
                time.sleep(0.01)
            r = "ok"
        except (ConnectionResetError, BrokenPipeError):
            r = "reset"
        except OSError:
            r = "stalled"
        with lock:
            results.append(r)
            lines[0] += k
        s.close()

    ts = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=400)
    print(f"conns={n} ok={results.count('ok')} reset={results.count('reset')} "
          f"stalled={results.count('stalled')} noconnect={results.count('noconnect')} lines={lines[0]}", flush=True)
