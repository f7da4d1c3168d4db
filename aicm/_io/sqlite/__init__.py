"""The durable SQLite queue (layer 2): one file, group-committed writes, leased claims.

- `.schema`: the file's schema; opening, checking and tuning a queue file; the fork gate
  and this process's write lock per file.
- `.writer`: inserts, group-committed from plain threads (`SyncWriter`) or an event loop
  (`AsyncWriter`).
- `.claims`: claims, leases, acks, releases, dead letters (the actor's transactions; the
  actor itself is ``SqliteStore`` in ``aicm._delivery.sqlite_store``).
- `.db`: async access to a connection, one thread hop per operation on asyncio and trio
  alike; a queue file deleted or replaced under a running process.
- `.admin`: the ``aicm queue`` command's reads and repairs.
"""

from __future__ import annotations

from .admin import (
    PurgeOutcome,
    QueueEntry,
    QueueSummary,
    RetargetOutcome,
    RetryOutcome,
    check_queue_file,
    list_queue,
    purge_rows,
    retarget_rows,
    retry_dead,
    summarize_queue,
)
from .claims import count_pending
from .schema import SCHEMA_VERSION
from .writer import AsyncWriter, SyncWriter

__all__ = [
    "SCHEMA_VERSION",
    "AsyncWriter",
    "PurgeOutcome",
    "QueueEntry",
    "QueueSummary",
    "RetargetOutcome",
    "RetryOutcome",
    "SyncWriter",
    "check_queue_file",
    "count_pending",
    "list_queue",
    "purge_rows",
    "retarget_rows",
    "retry_dead",
    "summarize_queue",
]
