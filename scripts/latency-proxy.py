#!/usr/bin/env python3
"""A TCP proxy that adds latency, to measure coffer and its peers as if the
S3 server were a WAN away: every chunk of bytes is forwarded DELAY_MS after
it arrived, in each direction (so a request-response round trip costs
2 x DELAY_MS more), through a queue with due times per direction: latency
never caps throughput, as on a real long fat pipe. An optional --mbit caps
each direction of each connection; --link-mbit caps each direction of the
link, all connections sharing it (as a WAN link does); --jitter-ms adds a
random 0..JITTER ms to each chunk's delay (never reordering a connection's
bytes). An optional --count-file keeps the bytes
sent to clients so far (responses, headers included) in that file, for
benchmarks that measure what a command reads from the store; an optional
--upload-log appends a line `SECONDS BYTES` (monotonic clock) for every piece
a client sends as it arrives, for benchmarks of an upload's pace.

    latency-proxy.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --delay-ms 20

It prints its port (useful with --listen 127.0.0.1:0) on standard output
once listening, and runs until killed.
"""
import argparse
import asyncio
import random
import time


SENT = {"bytes": 0, "file": None}
UPLOADS = {"file": None}
# With --link-mbit: when each direction of the shared link is free again.
LINK = {"mbit": 0.0, "free": {"up": 0.0, "down": 0.0}}
JITTER = {"s": 0.0}


def log_upload(n):
    """Notes `n` bytes that arrived from a client, with the time."""
    if UPLOADS["file"] is not None:
        UPLOADS["file"].write(f"{time.monotonic():.4f} {n}\n")


def count_sent(n):
    """Adds `n` bytes sent to a client to the count file, if there is one."""
    if SENT["file"] is None:
        return
    SENT["bytes"] += n
    with open(SENT["file"], "w") as f:
        f.write(f"{SENT['bytes']}\n")


def link_due(direction, due, n):
    """With --link-mbit: when `n` bytes that may leave at `due` have gone
    through the shared link (one direction), booking it until then."""
    if not LINK["mbit"]:
        return due
    start = max(due, LINK["free"][direction])
    LINK["free"][direction] = start + n * 8 / (LINK["mbit"] * 1e6)
    return LINK["free"][direction]


async def pump(reader, writer, delay, mbit, counted=False, uploads=False):
    """Forwards what `reader` gives to `writer`, each chunk `delay` seconds
    (plus jitter) after it arrived, in order; a reader task and a writer
    task meet in a queue."""
    queue = asyncio.Queue()
    direction = "up" if uploads else "down"

    async def read_side():
        last_due = 0.0
        while True:
            data = await reader.read(1 << 16)
            if uploads and data:
                log_upload(len(data))
            due = time.monotonic() + delay + random.uniform(0, JITTER["s"])
            last_due = max(last_due, due)
            await queue.put((last_due, data))
            if not data:
                return

    async def write_side():
        next_free = 0.0  # with --mbit: when the pipe is free again
        while True:
            due, data = await queue.get()
            if mbit:
                start = max(due, next_free)
                next_free = start + len(data) * 8 / (mbit * 1e6)
                due = next_free
            if data:
                due = link_due(direction, due, len(data))
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()
            if counted:
                count_sent(len(data))

    try:
        await asyncio.gather(read_side(), write_side())
    except (ConnectionError, OSError):
        pass


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True)
    p.add_argument("--delay-ms", type=float, default=20.0, help="added each way")
    p.add_argument("--mbit", type=float, default=0.0, help="cap per direction (0: none)")
    p.add_argument("--link-mbit", type=float, default=0.0,
                   help="cap per direction shared by all connections (0: none)")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="random extra delay, 0..this")
    p.add_argument("--count-file", help="keep the bytes sent to clients in this file")
    p.add_argument("--upload-log", help="append `SECONDS BYTES` for what clients send")
    a = p.parse_args()
    SENT["file"] = a.count_file
    LINK["mbit"] = a.link_mbit
    JITTER["s"] = a.jitter_ms / 1000.0
    if a.upload_log:
        UPLOADS["file"] = open(a.upload_log, "a", buffering=1)
    up_host, up_port = a.upstream.rsplit(":", 1)
    delay = a.delay_ms / 1000.0

    async def handle(client_r, client_w):
        try:
            # Connecting costs a round trip on a WAN too.
            await asyncio.sleep(2 * delay)
            up_r, up_w = await asyncio.open_connection(up_host, int(up_port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pump(client_r, up_w, delay, a.mbit, uploads=True),
            pump(up_r, client_w, delay, a.mbit, counted=True),
        )
        for w in (client_w, up_w):
            w.close()

    host, port = a.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
