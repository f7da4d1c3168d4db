"""HTTP load for the web scenario: ``wrk`` when it is installed, else a bounded generator here.

Both keep ``connections`` keep-alive connections busy with ``GET path`` for ``duration``
seconds and report the requests completed, the rate and the latency percentiles. The
in-repo generator stops by itself: at ``duration`` (no new request starts after it), at
``max_requests`` when given, and whatever the server does, by ``duration +
response_timeout`` (a request unanswered by then is an error, its connection dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
import shutil
import subprocess
import time
from urllib.parse import urlsplit


@dataclasses.dataclass
class LoadResult:
    """What one load round measured."""

    requests: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int = 0
    tool: str = ""

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else math.nan


def wrk_path() -> str | None:
    """Where ``wrk`` is, or None."""
    return shutil.which("wrk")


def run_load(url: str, *, connections: int, duration: float, use_wrk: bool = True) -> LoadResult:
    """``GET url`` from ``connections`` connections for ``duration`` s (wrk if available)."""
    wrk = wrk_path() if use_wrk else None
    if wrk is not None:
        return run_wrk(wrk, url, connections=connections, duration=duration)
    return asyncio.run(generate(url, connections=connections, duration=duration))


# -- wrk -------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_DURATION = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")


def run_wrk(wrk: str, url: str, *, connections: int, duration: float) -> LoadResult:
    """One ``wrk --latency`` run (one thread: the machine's other core serves the app)."""
    seconds = max(1, round(duration))
    done = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> LoadResult:
    """The requests, duration, p50 and p99 of ``wrk --latency``'s report."""
    match = _DURATION.search(text)
    if match is None:
        raise ValueError(f"not a wrk report: {text[-500:]!r}")
    requests = int(match.group(1))
    seconds = float(match.group(2)) * _UNITS[match.group(3)] / 1000
    percentiles = {
        m.group(1): float(m.group(2)) * _UNITS[m.group(3)] for m in _PERCENTILE.finditer(text)
    }
    errors = 0
    for m in _ERRORS.finditer(text):
        if m.group(1):
            errors += int(m.group(1))
        else:
            errors += sum(int(n) for n in re.findall(r"\d+", m.group(2)))
    return LoadResult(
        requests=requests,
        seconds=seconds,
        p50_ms=percentiles.get("50"),
        p99_ms=percentiles.get("99"),
        errors=errors,
        tool="wrk",
    )


# -- the in-repo generator ----------------------------------------------------------------------


async def generate(
    url: str,
    *,
    connections: int,
    duration: float,
    max_requests: int | None = None,
    response_timeout: float = 10.0,
) -> LoadResult:
    """Keep ``connections`` HTTP/1.1 connections busy with ``GET`` until a bound is reached."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    deadline = started + duration
    budget = [max_requests if max_requests is not None else math.inf]

    async def one_connection() -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(host, port), response_timeout
                        )
                    t0 = time.perf_counter()
                    writer.write(request)
                    ok, keep = await asyncio.wait_for(_response(reader), response_timeout)
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors[0] += 1
                    if not keep:
                        writer.close()
                        writer = None
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                    errors[0] += 1
                    if writer is not None:
                        writer.close()
                        writer = None
                    await asyncio.sleep(0.01)  # a refused connection must not spin
        finally:
            if writer is not None:
                writer.close()

    # Every connection's own wait is bounded; this bounds the whole round besides.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(one_connection() for _ in range(connections))),
            duration + response_timeout + 1,
        )
    seconds = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        seconds=seconds,
        p50_ms=_percentile_ms(latencies, 0.50),
        p99_ms=_percentile_ms(latencies, 0.99),
        errors=errors[0],
        tool="in-repo generator",
    )


async def _response(reader: asyncio.StreamReader) -> tuple[bool, bool]:
    """Read one response: (status 2xx, connection kept alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "content-length" not in headers:
        raise ValueError("the generator reads Content-Length bodies only")
    await reader.readexactly(int(headers["content-length"]))
    return 200 <= status < 300, headers.get("connection") != "close"


def _percentile_ms(sorted_seconds: list[float], q: float) -> float | None:
    if not sorted_seconds:
        return None
    index = min(len(sorted_seconds) - 1, max(0, math.ceil(q * len(sorted_seconds)) - 1))
    return sorted_seconds[index] * 1000
