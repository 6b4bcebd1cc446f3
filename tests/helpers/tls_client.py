#!/usr/bin/python3
"""tls_client.py: the client side of tests/tls_proxy_spec.lua, through the TLS proxy.

Usage (each prints one JSON object on stdout):
  tls_client.py https CA URL [JSON_BODY]    POST JSON_BODY (else GET) over https, the
                                            certificate checked against CA: {status, body
                                            (as text), length, sha256 (of the raw body)}
  tls_client.py http URL JSON_BODY [NAME:VALUE...]
                                            POST over plain HTTP with those headers:
                                            {status, body}
  tls_client.py frames CA HOST PORT LIST    chat frames over TLS: each [id, body] of the JSON
                                            LIST sent and its reply (id + 1) read: [reply]
  tls_client.py plain HOST PORT             plain HTTP to a TLS port: {answer} (what came
                                            back, "" if the connection was closed)
  tls_client.py cert CA HOST PORT           a TLS handshake checked against CA (name =
                                            HOST): {sha256 (of the certificate's DER),
                                            version}; {error} when it fails
  tls_client.py weak HOST PORT              a TLS 1.2 handshake offering only AES128-SHA256
                                            (no forward secrecy; CA not checked):
                                            {refused: true, why} or {version, cipher}
  tls_client.py talk CA SPEC_JSON           two users chat through the proxy: SPEC = {a, b,
                                            thread_id, text}, each user {uid, token, tcp:
                                            [host, port]} or {uid, token, ws: url, origin};
                                            both log in (1005), a sends text to b (1017),
                                            b gets it pushed (1019), b answers, a gets that:
                                            {a_login, b_login, a_sent, b_got, b_sent, a_got}

Only the addresses given are dialed (the spec's loopback proxy); TLS_CLIENT_SOURCE=ADDR
makes the connections come from ADDR (another loopback address than the proxy's own).
Deadlines: 10 s per read.
"""
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import http.client
import urllib.parse

TIMEOUT = 10


def context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


SOURCE = (os.environ["TLS_CLIENT_SOURCE"], 0) if os.environ.get("TLS_CLIENT_SOURCE") else None


def tls_socket(ca, host, port):
    raw = socket.create_connection((host, port), timeout=TIMEOUT, source_address=SOURCE)
    return context(ca).wrap_socket(raw, server_hostname=host)


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return out


class Frames:
    """The chat server's 2+2-byte frames (docs/protocol.md 5.1) over a TLS socket."""

    def __init__(self, ca, host, port):
        self.sock = tls_socket(ca, host, port)

    def send(self, msg_id, body):
        data = json.dumps(body).encode()
        self.sock.sendall(struct.pack(">HH", msg_id, len(data)) + data)

    def read(self):
        msg_id, n = struct.unpack(">HH", read_exact(self.sock, 4))
        return msg_id, json.loads(read_exact(self.sock, n))


class WebSocket:
    """RFC 6455 over TLS: masked text messages {"id", "body"} (docs/protocol.md 5.5)."""

    def __init__(self, ca, url, origin):
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        self.sock = tls_socket(ca, host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\nOrigin: %s\r\n\r\n"
                           % (path, hostport, key, origin)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise EOFError("closed during the handshake: %r" % head)
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError("handshake refused: %r" % head.split(b"\r\n")[0])

    def send(self, msg_id, body):
        data = json.dumps({"id": msg_id, "body": body}).encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n))
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + payload)

    def read(self):
        while True:
            b0, b1 = read_exact(self.sock, 2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", read_exact(self.sock, 2))[0]
            elif n == 127:
                n = struct.unpack(">Q", read_exact(self.sock, 8))[0]
            payload = read_exact(self.sock, n)
            op = b0 & 0x0F
            if op == 0x9:  # ping: answered (masked, as a client must)
                mask = os.urandom(4)
                self.sock.sendall(bytes([0x8A, 0x80 | n]) + mask +
                                  bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
                continue
            if op == 0x8:
                raise EOFError("closed by the server: %r" % payload)
            msg = json.loads(payload)
            return msg["id"], msg["body"]


def connect(ca, user):
    if "tcp" in user:
        return Frames(ca, user["tcp"][0], user["tcp"][1])
    return WebSocket(ca, user["ws"], user["origin"])


def wait_for(conn, wanted):
    """The body of the next frame with id wanted (others, e.g. presence pushes, skipped)."""
    while True:
        msg_id, body = conn.read()
        if msg_id == wanted:
            return body


def talk(ca, spec):
    a, b = connect(ca, spec["a"]), connect(ca, spec["b"])
    out = {}
    for name, conn in (("a", a), ("b", b)):
        conn.send(1005, {"uid": spec[name]["uid"], "token": spec[name]["token"]})
        out[name + "_login"] = wait_for(conn, 1006)["error"]
    for src, dst, sname, dname in ((a, b, "a", "b"), (b, a, "b", "a")):
        text = "%s from %s" % (spec["text"], sname)
        src.send(1017, {"touid": spec[dname]["uid"], "thread_id": spec["thread_id"],
                        "text_array": [{"content": text, "unique_id": os.urandom(8).hex()}]})
        out[sname + "_sent"] = wait_for(src, 1018)["error"]
        got = wait_for(dst, 1019)
        out[dname + "_got"] = got["chat_datas"][0]["content"]
    return out


def main(argv):
    cmd = argv[1]
    if cmd == "https":
        ca, url = argv[2], argv[3]
        data = argv[4].encode() if len(argv) > 4 else None
        u = urllib.parse.urlsplit(url)
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=TIMEOUT,
                                           context=context(ca), source_address=SOURCE)
        target = (u.path or "/") + ("?" + u.query if u.query else "")
        conn.request("POST" if data else "GET", target, body=data,
                     headers={"Content-Type": "application/json"})
        rsp = conn.getresponse()
        raw = rsp.read()
        return {"status": rsp.status, "body": raw.decode("utf-8", "replace"),
                "length": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if cmd == "http":
        u = urllib.parse.urlsplit(argv[2])
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT,
                                          source_address=SOURCE)
        headers = {"Content-Type": "application/json"}
        for h in argv[4:]:
            name, _, value = h.partition(":")
            headers[name] = value.strip()
        conn.request("POST", u.path, body=argv[3].encode(), headers=headers)
        rsp = conn.getresponse()
        return {"status": rsp.status, "body": rsp.read().decode("utf-8", "replace")}
    if cmd == "frames":
        conn = Frames(argv[2], argv[3], int(argv[4]))
        out = []
        for msg_id, body in json.loads(argv[5]):
            conn.send(msg_id, body)
            out.append(wait_for(conn, msg_id + 1))
        return out
    if cmd == "plain":
        sock = socket.create_connection((argv[2], int(argv[3])), timeout=TIMEOUT)
        sock.sendall(b"POST /user_login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")
        answer = b""
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return {"answer": answer.decode("utf-8", "replace")}
    if cmd == "cert":
        ca, host, port = argv[2], argv[3], int(argv[4])
        try:
            sock = tls_socket(ca, host, port)
        except (ssl.SSLError, OSError) as e:
            return {"error": str(e)}
        der = sock.getpeercert(binary_form=True)
        return {"sha256": hashlib.sha256(der).hexdigest(), "version": sock.version()}
    if cmd == "weak":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("AES128-SHA256")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            raw = socket.create_connection((argv[2], int(argv[3])), timeout=TIMEOUT)
            sock = ctx.wrap_socket(raw)
            return {"version": sock.version(), "cipher": sock.cipher()[0]}
        except ssl.SSLError as e:
            return {"refused": True, "why": str(e)}
    if cmd == "talk":
        return talk(argv[2], json.loads(argv[3]))
    raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv)))
