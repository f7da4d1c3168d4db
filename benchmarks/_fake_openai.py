"""The fake OpenAI API of the tests (``tests/fakes``), served in a process of its own.

    python -m benchmarks._fake_openai

Prints its root URL first and serves until terminated, so the client under measure shares
neither its process nor its GIL with the server answering it.
"""

from __future__ import annotations

import signal
import sys
import threading


def main() -> int:
    """Serve the fake until SIGTERM or SIGINT."""
    from tests.fakes import FakeOpenAI

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeOpenAI() as fake:
        print(fake.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
