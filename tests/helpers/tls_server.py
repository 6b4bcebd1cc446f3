#!/usr/bin/python3
"""tls_server.py: an HTTPS (or plain HTTP) test server for the http client specs.

Usage: tls_server.py CERT KEY      https on 127.0.0.1, a free port
       tls_server.py --plain       plain http
       tls_server.py --stall       accepts connections and never says a word
       tls_server.py --proxy       an HTTP CONNECT proxy (what https_proxy names): prints
                                   "CONNECT host:port" for each tunnel it opens

Prints the port on its first line. HTTP/1.1 with keep-alive; each connection is served
(and its TLS handshake made) on a thread of its own. Routes:
  GET /hello           -> {"hello": "world"}
  GET /conns           -> {"connections": N}  TCP connections accepted so far
  GET /slow?ms=N       -> {"slow": N} after N ms
  GET /big?n=N         -> N bytes of "x"
  GET /redirect?n=K    -> 302 to /redirect?n=K-1 while K > 0, then 200 "arrived"
  GET /redirect?to=URL -> 302 to URL
  POST /echo           -> the body
"""
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"connections": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/hello":
            self.reply(200, {"hello": "world"})
        elif url.path == "/conns":
            with lock:
                self.reply(200, {"connections": state["connections"]})
        elif url.path == "/slow":
            ms = int(q.get("ms", "300"))
            time.sleep(ms / 1000.0)
            self.reply(200, {"slow": ms})
        elif url.path == "/big":
            self.reply(200, "x" * int(q["n"]), "text/plain")
        elif url.path == "/redirect" and "to" in q:
            self.reply(302, "", "text/plain", [("Location", q["to"])])
        elif url.path == "/redirect":
            n = int(q.get("n", "0"))
            if n > 0:
                self.reply(302, "", "text/plain", [("Location", "/redirect?n=%d" % (n - 1))])
            else:
                self.reply(200, "arrived", "text/plain")
        else:
            self.reply(404, {"error": "no such route"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply(200, body, "text/plain")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    context = None

    def get_request(self):
        sock, addr = self.socket.accept()
        with lock:
            state["connections"] += 1
        return sock, addr

    def finish_request(self, request, client_address):
        if self.context:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                request.close()
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass


def stall():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    print(s.getsockname()[1], flush=True)
    held = []
    while True:
        held.append(s.accept()[0])


def relay(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def tunnel(conn):
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(4096)
        if not data:
            conn.close()
            return
        head += data
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or parts[0] != "CONNECT":
        conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        return
    target_host, target_port = parts[1].rsplit(":", 1)
    try:
        up = socket.create_connection((target_host, int(target_port)), 5)
    except OSError:
        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        return
    up.settimeout(None)
    print("CONNECT " + parts[1], flush=True)
    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=relay, args=(up, conn), daemon=True).start()
    relay(conn, up)


def proxy():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    print(s.getsockname()[1], flush=True)
    while True:
        conn = s.accept()[0]
        threading.Thread(target=tunnel, args=(conn,), daemon=True).start()


def main():
    if sys.argv[1:] == ["--stall"]:
        return stall()
    if sys.argv[1:] == ["--proxy"]:
        return proxy()
    server = Server(("127.0.0.1", 0), Handler)
    if sys.argv[1:] != ["--plain"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])
        server.context = ctx
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
