"""A loopback HTTP sink for the analytics baselines: answers every request ``200 {"status": 1}``.

posthog and segment need somewhere to send their batches; the benchmarks never reach the
real network, so they are pointed here. The sink reads each request body (keep-alive,
``Content-Length`` or chunked) and throws it away, counting requests and bytes per path;
``GET /_sink/stats`` returns the counts. ``POST /_sink/pause`` holds every answer until
``POST /_sink/resume``: a client's sender then waits on its first batch while records pile
up behind it, which is how the close scenario builds a backlog. The sink parses nothing, so
it is cheaper per record than the aicm collector, which validates and stores every record:
figures delivered to the sink favour the baselines.

    python -m benchmarks._sink            # prints "sink listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter

_OK = b'{"status":1}'
_counts: Counter[str] = Counter()
_bytes: Counter[str] = Counter()
_resumed: asyncio.Event | None = None  # cleared while paused: answers wait for a resume


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the empty line after the last chunk
                return total
            await reader.readexactly(size + 2)
            total += size
    length = int(headers.get("content-length", "0") or "0")
    if length:
        await reader.readexactly(length)
    return length


def _answer(body: bytes, status: str = "200 OK") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                return
            headers: dict[str, str] = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            size = await _read_body(reader, headers)
            assert _resumed is not None
            if path == "/_sink/stats":
                stats = {"requests": dict(_counts), "bytes": dict(_bytes)}
                writer.write(_answer(json.dumps(stats).encode()))
            elif path == "/_sink/pause":
                _resumed.clear()
                writer.write(_answer(_OK))
            elif path == "/_sink/resume":
                _resumed.set()
                writer.write(_answer(_OK))
            else:
                _counts[path] += 1
                _bytes[path] += size
                await _resumed.wait()
                writer.write(_answer(_OK))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _main(port: int) -> None:
    global _resumed
    _resumed = asyncio.Event()
    _resumed.set()
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"sink listening on http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else 0
    asyncio.run(_main(port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
