"""Helpers for tests of the SQLite queue: rows to write, and writing them as callers do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import anyio

from aicm._io.sqlite import SqliteQueue

Row = tuple[str, str, str]  # (endpoint, response_id, body), as SqliteQueue.add takes it


def queue_row(rid: str, body: str | None = None) -> Row:
    """A /track row for the queue."""
    return ("/track", rid, f'{{"response_id": "{rid}"}}' if body is None else body)


async def add_all(queue: SqliteQueue, rows: Sequence[Row]) -> None:
    """Add ``rows`` one after another: ids follow the order of ``rows``."""
    for row in rows:
        await queue.add(*row)


async def add_together(queue: SqliteQueue, rows: Sequence[Row]) -> None:
    """Add ``rows`` from concurrent callers, as concurrent ``track()`` calls do: they share
    group commits (in no set order)."""
    async with anyio.create_task_group() as tg:
        for row in rows:
            tg.start_soon(queue.add, *row)


class Claimed(NamedTuple):
    """One row of ``SqliteQueue.claim_tuples``, with names."""

    id: int
    endpoint: str
    response_id: str
    body: str
    created_at: float
    attempts: int


async def claim(queue: SqliteQueue, limit: int, *, lease_seconds: float) -> list[Claimed]:
    """``queue.claim_tuples``, each row named."""
    return [Claimed(*r) for r in await queue.claim_tuples(limit, lease_seconds=lease_seconds)]
