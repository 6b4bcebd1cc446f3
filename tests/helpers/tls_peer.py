#!/usr/bin/python3
"""tls_peer.py: a TLS stream peer for the host.tcp TLS specs (tests/tcp_tls_spec.lua).

Usage: tls_peer.py CERT KEY    TLS on 127.0.0.1, a free port
       tls_peer.py --plain     no TLS: greets each connection in clear and waits

Prints the port on its first line. After the handshake the client's first byte picks what
the connection does:
  E  echo every byte back until the client's end
  C  send "bye\\r\\npartial", then close_notify and close
  R  send "bye", then close the socket without close_notify
When a connection ends the peer prints one line: "end clean" (the client's close_notify),
"end ragged" (its socket ended without one) or "end error <what>".
"""
import socket
import ssl
import sys
import threading

lock = threading.Lock()


def say(line):
    with lock:
        print(line, flush=True)


def echo(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def serve(conn):
    try:
        mode = conn.recv(1)
        if mode == b"E":
            echo(conn)
            say("end clean")
        elif mode == b"C":
            conn.sendall(b"bye\r\npartial")
            conn = conn.unwrap()
        elif mode == b"R":
            conn.sendall(b"bye")
        elif mode == b"":
            say("end clean")
    except ssl.SSLEOFError:
        say("end ragged")
    except (ssl.SSLError, OSError) as e:
        say("end error " + type(e).__name__)
    finally:
        conn.close()


def handshake(ctx, raw):
    try:
        conn = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
    except (ssl.SSLError, OSError) as e:
        say("handshake error " + type(e).__name__)
        raw.close()
        return
    serve(conn)


def plain(raw):
    raw.sendall(b"hello in clear\r\n")
    threading.Event().wait(30)


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    ctx = None
    if sys.argv[1:] != ["--plain"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    print(s.getsockname()[1], flush=True)
    while True:
        raw = s.accept()[0]
        target = plain if ctx is None else (lambda r: handshake(ctx, r))
        threading.Thread(target=target, args=(raw,), daemon=True).start()


if __name__ == "__main__":
    main()
