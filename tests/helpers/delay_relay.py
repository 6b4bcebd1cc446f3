#!/usr/bin/python3
"""delay_relay.py: added latency for the namespace specs where the kernel has no netem.

Usage: delay_relay.py LISTEN_IP TARGET_IP CONTROL_FILE PORT [PORT ...]

Listens on LISTEN_IP:PORT for every PORT and relays each connection to TARGET_IP:PORT.
Every chunk read from either side is written to the other side `delay` ms after it was
read, in order (so a connection through the relay sees the added latency in both
directions, as tc netem on both hosts' way out would give it). The delay starts at 0;
SIGHUP makes the relay read CONTROL_FILE (a number of ms) and print "delay N" once it
applies. Bounded: at most QUEUE_MAX chunks wait per direction (reading pauses beyond it),
at most CONN_MAX connections at once (more are closed at once). Prints "ready" when every
port listens. Only the addresses given are used: the specs pass addresses of their own
test network (198.18.0.0/15 inside network namespaces).
"""
import asyncio
import signal
import sys
import time

QUEUE_MAX = 256
CHUNK = 65536
CONN_MAX = 1000

state = {"delay": 0.0, "conns": 0}


async def pump(reader, writer):
    """Copies reader to writer, each chunk delayed by the delay in force when it was read."""
    queue = asyncio.Queue(QUEUE_MAX)

    async def read_side():
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((time.monotonic() + state["delay"], data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((time.monotonic(), b""))

    async def write_side():
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    await asyncio.gather(read_side(), write_side())


async def serve(client_reader, client_writer, target_ip, port):
    if state["conns"] >= CONN_MAX:
        client_writer.close()
        return
    state["conns"] += 1
    try:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(target_ip, port), 10)
        except (OSError, asyncio.TimeoutError):
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, up_writer), pump(up_reader, client_writer))
        up_writer.close()
        client_writer.close()
    finally:
        state["conns"] -= 1


def reload(control):
    try:
        with open(control) as f:
            state["delay"] = float(f.read().strip() or 0) / 1000.0
    except (OSError, ValueError) as e:
        print("bad control file:", e, flush=True)
        return
    print("delay %d" % round(state["delay"] * 1000), flush=True)


async def main():
    listen_ip, target_ip, control = sys.argv[1], sys.argv[2], sys.argv[3]
    ports = [int(p) for p in sys.argv[4:]]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload, control)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    servers = []
    for port in ports:
        servers.append(await asyncio.start_server(
            lambda r, w, p=port: serve(r, w, target_ip, p), listen_ip, port))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except RuntimeError:  # loop.stop() on SIGTERM
        pass
