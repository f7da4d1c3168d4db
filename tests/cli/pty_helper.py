"""Run ``python -m aicm`` on a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from .conftest import aicm_env


def run_in_pty(
    args: list[str], answer: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run the command with stdin, stdout and stderr on a terminal; type ``answer`` once it
    asks ``[y/N]``. Returns the exit status and everything it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "aicm", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=aicm_env(TERM="xterm", **(env or {})),
        close_fds=True,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if answer is not None and b"[y/N]" in output:
                    os.write(master, answer.encode())
                    answer = None
            elif process.poll() is not None:
                break
        code = process.wait(timeout=10)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, output.decode(errors="replace")
