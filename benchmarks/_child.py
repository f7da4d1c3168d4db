"""Run one scenario in this process and write its result as JSON (the runner's child).

python -m benchmarks._child NAME --collector URL --sink URL --tmp DIR --rounds N --out PATH
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from pathlib import Path

from ._common import Context, aicm_tree_hash, write_json
from .scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    """Run the scenario; its result (or its error) goes to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SCENARIOS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--collector", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--tmp", type=Path, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    module = importlib.import_module(SCENARIOS[args.name])
    ctx = Context(
        quick=args.quick,
        collector=args.collector,
        sink=args.sink,
        tmp=args.tmp,
        rounds=args.rounds,
    )
    started = time.perf_counter()
    tree = aicm_tree_hash()  # the code this child imported (near enough: just before)
    try:
        result = module.run(ctx).to_dict()
    except Exception as exc:
        result = {
            "name": args.name,
            "title": getattr(module, "TITLE", args.name),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["aicm_tree"] = tree
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
