"""A tiny WSGI app for the deployment runs: each request tracks one record (gunicorn).

Built at import, so that ``gunicorn --preload`` builds the tracker in the master, before
it forks its workers: what a real app with a module-level tracker does. The record's
``response_id`` is the request path (``/ID``). ``REL_DELIVERY`` picks the delivery type,
``REL_DB`` the queue file; the connection comes from ``AICM_*``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from aicm import Tracker

tracker = Tracker(delivery_type=os.environ["REL_DELIVERY"], db_path=os.environ.get("REL_DB"))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Track one record whose response_id is the path; answer the worker's pid."""
    rid = str(environ.get("PATH_INFO", "/")).strip("/")
    time.sleep(0.005)  # a request takes a moment, so concurrent ones reach both workers
    tracker.track("openai", "openai::gpt-4o-mini", {"input_tokens": 1}, response_id=rid)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
