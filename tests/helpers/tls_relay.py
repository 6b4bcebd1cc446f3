#!/usr/bin/python3
"""tls_relay.py: a TLS-terminating relay in front of a plain TCP server, for the specs
where the terminal client reaches the gate over https (what a reverse proxy does).

Usage: tls_relay.py CERT KEY TARGET_PORT

Listens on 127.0.0.1 (a free port, printed on the first line), makes the TLS handshake
with each client and relays the decrypted bytes to 127.0.0.1:TARGET_PORT and back.
"""
import asyncio
import ssl
import sys

CHUNK = 65536


async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(reader, writer, port):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def main():
    cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(lambda r, w: serve(r, w, port), "127.0.0.1", 0,
                                        ssl=ctx)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
