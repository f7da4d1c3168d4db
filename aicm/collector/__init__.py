"""The local collector: a real HTTP server of the aicm wire contract (layer 6, public).

For tests, the demo, benchmarks and ``aicm serve``; it needs the ``collector`` extra
(starlette, uvicorn, and pyjwt with cryptography to sign usage limits)::

    from aicm.collector import Faults, LocalCollector

    with LocalCollector(faults=Faults(fail_first=1)) as collector:
        ...  # point the SDK at collector.api_base
        collector.records("track")
"""

from __future__ import annotations

try:
    import cryptography  # noqa: F401
    import jwt  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "aicm.collector needs starlette, uvicorn, pyjwt and cryptography:"
        " pip install 'aicm-sdk[collector]'"
    ) from exc

from aicm.collector._app import create_app
from aicm.collector._cli import add_arguments, main, run_from_args
from aicm.collector._faults import Faults
from aicm.collector._server import LocalCollector

__all__ = [
    "Faults",
    "LocalCollector",
    "add_arguments",
    "create_app",
    "main",
    "run_from_args",
]
