"""The ``aicm`` command on a real terminal: tmux at 80x24, its screen captured as text.

``python -m tests.cli.screens`` runs every screen and writes what tmux showed into the
console blocks of ``docs/cli.md`` that follow ``<!-- screen: NAME -->``: the docs' CLI
screenshots are this output. ``tests/cli/test_terminal.py`` runs the same screens and
checks the docs still match (numbers, times and ids aside) and that nothing is wider than
the terminal.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "cli.md"
WIDTH, HEIGHT = 80, 24

# name: the command line typed (as the docs show it).
SCREENS: dict[str, str] = {
    "demo": "aicm demo --records 100 --db records.sqlite3",
    "report": "aicm report --db records.sqlite3 --by customer",
    "queue-stats": "aicm queue stats --db queue.db",
    "queue-list": "aicm queue list --db queue.db",
    "queue-watch": "aicm queue watch --db queue.db --count 3 --interval 0.2",
    "queue-drain": "aicm queue drain --db queue.db",
    "limits": "aicm limits progress",
}

_SERVERS = itertools.count()

_MARKER = re.compile(r"<!-- screen: ([\w-]+) -->\n```console\n(.*?)```\n", re.DOTALL)


def have_tmux() -> bool:
    """Whether tmux can be run here."""
    return shutil.which("tmux") is not None


def run_screen(command: str, cwd: Path, env: Mapping[str, str], timeout: float = 60) -> str:
    """Run ``command`` in a new tmux session of 80x24 in ``cwd``; the text it left on the
    screen (scrollback included), once it has exited."""
    bin_dir = cwd / ".bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "aicm"  # `aicm` as the docs type it: this Python, this checkout
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m aicm "$@"\n')
    wrapper.chmod(0o755)
    # A server of its own per screen: a server just killed may still hold its socket.
    socket = f"aicm-screens-{os.getpid()}-{next(_SERVERS)}"
    conf = cwd / ".tmux.conf"
    conf.write_text("set -g remain-on-exit on\nset -g history-limit 5000\nset -g status off\n")
    full_env = {
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        "TERM": "xterm-256color",
    }
    full_env.pop("NO_COLOR", None)
    full_env.pop("TMUX", None)

    def tmux(*args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", socket, "-f", str(conf), *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd,
            timeout=30,
        )
        if done.returncode:
            raise RuntimeError(f"tmux {args[0]} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    tmux("new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), "-c", str(cwd), command)
    try:
        deadline = time.monotonic() + timeout
        while tmux("display-message", "-p", "#{pane_dead}").strip() != "1":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command!r} still runs after {timeout} s")
            time.sleep(0.1)
        # -J: lines the terminal wrapped come back whole, so a line over 80 shows as one.
        screen = tmux("capture-pane", "-p", "-J", "-S", "-")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)
    lines = [line.rstrip() for line in screen.splitlines()]
    lines = [line for line in lines if not line.startswith("Pane is dead")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def documented() -> dict[str, str]:
    """The screens docs/cli.md shows, by name: the text of each console block (the typed
    command line first)."""
    return {m.group(1): m.group(2) for m in _MARKER.finditer(DOC.read_text())}


def write_docs(screens: Mapping[str, str]) -> None:
    """Put each captured screen in its block of docs/cli.md."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        body = screens.get(name, match.group(2))
        return f"<!-- screen: {name} -->\n```console\n{body}```\n"

    DOC.write_text(_MARKER.sub(replace, DOC.read_text()))


def normal(text: str) -> list[str]:
    """``text`` with what changes from run to run masked: ids, numbers, spacing."""
    # A hex word holding a digit (a uuid, or a piece of one folded over lines) is an id.
    text = re.sub(r"\b[0-9a-f-]*\d[0-9a-f-]*\b", "0", text)
    # An age (8s, 1m05s, 2h10m): a slow machine may show the next unit up.
    text = re.sub(r"\b\d+(?:[dhm]\d+)?[dhms]\b", "0s", text)
    text = re.sub(r"\d[\d,.]*", "0", text)
    return [" ".join(line.split()) for line in text.splitlines()]


def capture_all(workdir: Path, env: Mapping[str, str], api_base: str, key: str) -> dict[str, str]:
    """Every screen, in order, run in ``workdir`` (which holds ``queue.db``) against the
    collector at ``api_base`` for the limits; returns each as the docs show it."""
    env = {**env, "AICM_API_BASE": api_base, "AICM_API_KEY": key}
    return {name: f"$ {cmd}\n" + run_screen(cmd, workdir, env) for name, cmd in SCREENS.items()}


def _main() -> int:
    import tempfile

    sys.path.insert(0, str(REPO))
    from aicm.collector import LocalCollector
    from tests.cli.conftest import API_KEY, make_queue

    if not have_tmux():
        print("tmux is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp, LocalCollector() as collector:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
        for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            env[var] = str(work / var.lower())
        make_queue(work / "queue.db", collector)
        collector.clear()
        set_limit(collector.api_base, API_KEY)
        write_docs(capture_all(work, env, collector.api_base, API_KEY))
    print(f"wrote the screens into {DOC}")
    return 0


def set_limit(api_base: str, key: str) -> None:
    """A daily limit on the collector, a little of it spent, for the limits screen."""
    from aicm import CostManagerClient, Tracker

    with CostManagerClient(aicm_api_key=key, aicm_api_base=api_base) as client:
        client.create_usage_limit(
            amount="1", period="day", threshold_type="limit", service_key="openai::gpt-5-mini"
        )
    with Tracker(aicm_api_key=key, aicm_api_base=api_base) as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 200_000, "output_tokens": 50_000})


if __name__ == "__main__":
    raise SystemExit(_main())
