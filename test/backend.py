#!/usr/bin/env python3
"""A lab backend: HTTP on 8080, a line echo on 9000 (TCP) and a UDP echo on
5353, each answering with the backend's name and the client address it saw."""
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]
ADDR = sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{NAME} client={self.client_address[0]}:{self.client_address[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def echo_tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ADDR, 9000))
    s.listen(64)
    while True:
        c, a = s.accept()
        threading.Thread(target=serve_echo, args=(c, a), daemon=True).start()


def serve_echo(c, a):
    with c:
        f = c.makefile("rwb")
        for line in f:
            f.write(f"{NAME} client={a[0]}:{a[1]} {line.decode().strip()}\n".encode())
            f.flush()


def echo_udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ADDR, 5353))
    while True:
        data, a = s.recvfrom(2048)
        s.sendto(f"{NAME} client={a[0]}:{a[1]} {data.decode(errors='replace')}".encode(), a)


class Server(ThreadingHTTPServer):
    def server_bind(self):
        # HTTPServer.server_bind resolves the host name (getfqdn), which in
        # a namespace without DNS stalls for seconds: skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = NAME, 8080


threading.Thread(target=echo_tcp, daemon=True).start()
threading.Thread(target=echo_udp, daemon=True).start()
Server((ADDR, 8080), Handler).serve_forever()
