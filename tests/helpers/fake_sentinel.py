#!/usr/bin/python3
"""A stand-in for one Redis Sentinel whose answer the spec controls, for the cases a real
sentinel will not produce (naming a replica as the master). Usage:
    fake_sentinel.py ADDRESS_FILE [PASSWORD]
Listens on a free loopback port and prints "ready PORT". SENTINEL get-master-addr-by-name
answers the "ip port" in ADDRESS_FILE (read at each question: the spec rewrites it), or nil
when the file is empty; SUBSCRIBE is confirmed, and on SIGUSR1 every subscriber gets the
text in ADDRESS_FILE.switch as a message on +switch-master; AUTH and PING answer OK and
PONG; each question is counted in ADDRESS_FILE.asked. With PASSWORD, a connection must
AUTH with it first (else -NOAUTH, a wrong one -WRONGPASS)."""
import asyncio
import signal
import sys

ADDRESS_FILE = sys.argv[1]
PASSWORD = sys.argv[2] if len(sys.argv) > 2 else None
SUBSCRIBERS = set()


def bulk(s):
    b = s.encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


async def read_command(reader):
    line = await reader.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.decode().split()
    args = []
    for _ in range(int(line[1:])):
        n = int((await reader.readline())[1:])
        args.append((await reader.readexactly(n + 2))[:-2].decode())
    return args


def count_question():
    path = ADDRESS_FILE + ".asked"
    try:
        with open(path) as f:
            n = int(f.read() or 0)
    except (OSError, ValueError):
        n = 0
    with open(path, "w") as f:
        f.write(str(n + 1))


async def serve(reader, writer):
    authed = PASSWORD is None
    try:
        while True:
            args = await read_command(reader)
            if args is None:
                break
            cmd = args[0].lower() if args else ""
            if cmd == "auth":
                authed = PASSWORD is None or args[1:] == [PASSWORD]
                writer.write(b"+OK\r\n" if authed else b"-WRONGPASS invalid password\r\n")
            elif not authed:
                writer.write(b"-NOAUTH Authentication required.\r\n")
            elif cmd == "sentinel" and len(args) == 3 and args[1].lower() == "get-master-addr-by-name":
                count_question()
                with open(ADDRESS_FILE) as f:
                    addr = f.read().split()
                if len(addr) == 2:
                    writer.write(b"*2\r\n" + bulk(addr[0]) + bulk(addr[1]))
                else:
                    writer.write(b"*-1\r\n")
            elif cmd == "subscribe":
                SUBSCRIBERS.add(writer)
                for i, ch in enumerate(args[1:]):
                    writer.write(b"*3\r\n" + bulk("subscribe") + bulk(ch) + b":%d\r\n" % (i + 1))
            elif cmd == "ping":
                writer.write(b"+PONG\r\n")
            else:
                writer.write(b"-ERR unknown command\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    SUBSCRIBERS.discard(writer)
    writer.close()


def publish_switch():
    with open(ADDRESS_FILE + ".switch") as f:
        text = f.read().strip()
    for w in SUBSCRIBERS:
        w.write(b"*3\r\n" + bulk("message") + bulk("+switch-master") + bulk(text))


async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, publish_switch)
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print("ready %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
