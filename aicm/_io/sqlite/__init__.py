"""The durable SQLite queue (layer 2): one file, group-committed writes, leased claims.

- `.schema`: the file's schema; opening, checking and tuning a queue file; the fork gate
  and this process's write lock per file.
- `.writer`: inserts, and `SyncWriter` for plain threads.
- `.claims`: claims, leases, acks, releases, dead letters (the actor's transactions).
- `.db`: async access to a connection, one thread hop per operation on asyncio and trio
  alike; a queue file deleted or replaced under a running process.
- `.queue`: `SqliteQueue`, the async side: group-committed adds and the actor's calls.
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
from .queue import SqliteQueue
from .schema import SCHEMA_VERSION
from .writer import SyncWriter

__all__ = [
    "SCHEMA_VERSION",
    "PurgeOutcome",
    "QueueEntry",
    "QueueSummary",
    "RetargetOutcome",
    "RetryOutcome",
    "SqliteQueue",
    "SyncWriter",
    "check_queue_file",
    "count_pending",
    "list_queue",
    "purge_rows",
    "retarget_rows",
    "retry_dead",
    "summarize_queue",
]
