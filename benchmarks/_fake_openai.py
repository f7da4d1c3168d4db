"""The fake OpenAI API of the tests (``tests/fakes``), served in a process of its own.

    python -m benchmarks._fake_openai

Prints its root URL first and serves until terminated, so the client under measure shares
neither its process nor its GIL with the server answering it. The app is the fake's own;
uvicorn serves it from this process's main thread with its default loop and HTTP parser.
"""

from __future__ import annotations

import socket
import sys


def main() -> int:
    """Serve the fake on a free loopback port until terminated."""
    import uvicorn

    from tests.fakes import FakeOpenAI

    app = FakeOpenAI().build_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
