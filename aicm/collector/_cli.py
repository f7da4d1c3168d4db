"""``python -m aicm.collector`` (layer 6): run the collector in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from types import FrameType

from aicm._core.exceptions import ConfigError
from aicm.collector._app import API_URL, build_app
from aicm.collector._collector import Collector, default_data_dir
from aicm.collector._faults import Faults
from aicm.collector._server import CollectorServer, uvicorn_config

__all__ = ["add_arguments", "main", "run_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the collector's options to ``parser`` (used by ``aicm serve`` too)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help=(
            "SQLite file for the records, customers, webhooks and custom services"
            " (default: a temporary file, removed on exit)"
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="PATH",
        default=None,
        help=(
            "directory of the usage limits and the key that signs them, made on first start"
            " (default: $XDG_DATA_HOME/aicm/collector, ~/.local/share/aicm/collector)"
        ),
    )
    parser.add_argument(
        "--configs",
        metavar="PATH",
        default=None,
        help='JSON file of service configs: {"service_configs": [...]} or the list',
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the fault dice (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    faults = parser.add_argument_group("fault injection (all off by default)")
    faults.add_argument(
        "--failure-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of requests (0..1) that fail",
    )
    faults.add_argument(
        "--failure-status",
        type=int,
        default=503,
        metavar="CODE",
        help="status of injected failures (default: %(default)s)",
    )
    faults.add_argument(
        "--retry-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Retry-After sent with injected failures",
    )
    faults.add_argument(
        "--fail-first", type=int, default=0, metavar="N", help="the first N requests fail"
    )
    faults.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay added to each request"
    )
    faults.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of requests whose connection is dropped",
    )
    faults.add_argument(
        "--drop-after-store", action="store_true", help="store a dropped request's records first"
    )
    faults.add_argument(
        "--reject-response-id",
        action="append",
        default=[],
        metavar="ID",
        dest="reject_response_ids",
        help="answer status 'error' for this response_id (repeatable)",
    )
    faults.add_argument(
        "--reject-status",
        type=int,
        default=202,
        metavar="CODE",
        help="status of a batch holding rejected ids (default: %(default)s)",
    )
    faults.add_argument(
        "--forge-limits",
        action="store_true",
        help="sign answers' triggered_limits with a throwaway key (a man in the middle)",
    )
    faults.add_argument(
        "--require-api-key-env",
        metavar="VAR",
        default=None,
        help="require 'Authorization: Bearer <key>', the key read from this environment variable",
    )


def _faults_from_args(args: argparse.Namespace) -> Faults:
    api_key = None
    if args.require_api_key_env:
        api_key = os.environ.get(args.require_api_key_env)
        if not api_key:
            raise ConfigError(
                f"--require-api-key-env: environment variable {args.require_api_key_env} is not set"
            )
    try:
        return Faults(
            failure_rate=args.failure_rate,
            failure_status=args.failure_status,
            retry_after=args.retry_after,
            fail_first=args.fail_first,
            latency=args.latency,
            drop_rate=args.drop_rate,
            drop_after_store=args.drop_after_store,
            forge_limits=args.forge_limits,
            reject_response_ids=frozenset(args.reject_response_ids),
            reject_status=args.reject_status,
            require_api_key=api_key,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down; exit 0 then.
    raise SystemExit(0)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the collector with parsed options until SIGINT/SIGTERM; return the exit status."""
    try:
        collector = Collector(
            configs_path=args.configs,
            db_path=args.db,
            faults=_faults_from_args(args),
            seed=args.seed,
            data_dir=args.data_dir if args.data_dir is not None else default_data_dir(),
        )
        signing = collector.signing_key
        key_id = signing.key_id  # made now, on first start, so it can be printed
    except (ConfigError, OSError, ValueError) as exc:
        print(f"aicm collector: {exc}", file=sys.stderr)
        return 2
    try:

        def announce(server: CollectorServer) -> None:
            host = f"[{args.host}]" if ":" in args.host else args.host
            base = f"http://{host}:{server.bound_port}"
            db = collector.store.path
            if getattr(args, "json", False):  # aicm serve --json: one machine-readable line
                where = {"api_base": base, "api_root": f"{base}{API_URL}", "db": str(db)}
                where |= {"limits": str(collector.limits.path), "key_id": key_id}
                where |= {"public_key_path": str(signing.public_path)}
                print(json.dumps(where), flush=True)
                return
            print(
                f"aicm collector listening on {base} (API root {base}{API_URL}, db {db})\n"
                f"usage limits in {collector.limits.path}, signed with key {key_id}; its"
                f" public key, to pin in the SDK, is {signing.public_path}:\n"
                f"{signing.public_pem.rstrip()}",
                flush=True,
            )

        config = uvicorn_config(
            build_app(collector),
            host=args.host,
            port=args.port,
            in_process=False,
            log_level=args.log_level,
        )
        server = CollectorServer(config, on_started=announce)
        previous = {
            sig: signal.signal(sig, _exit_quietly) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            server.run()
        except (KeyboardInterrupt, SystemExit) as exc:
            if isinstance(exc, SystemExit) and exc.code not in (0, None):
                return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0 if server.started else 1
    finally:
        collector.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m aicm.collector [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m aicm.collector",
        description="A local AICostManager-compatible collector: records what the SDK sends.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
