"""The simulator's command line: `python -m sabito_simulator`, and the options the
project's `manage.py sabito_simulator` shares with it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable

from .server import SabitoSimulator, serving


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by `python -m sabito_simulator` and `manage.py sabito_simulator`."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port; 0 picks a free one (default: 8001)")
    parser.add_argument("--customers", type=int, default=500, help="customers per business (default: 500)")
    parser.add_argument("--businesses", type=int, default=2, help="number of businesses (default: 2)")
    parser.add_argument("--seed", type=int, default=42, help="data seed (default: 42)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SABITO_API_KEY") or "sim-key",
        help="the X-API-Key clients must send (default: $SABITO_API_KEY, else sim-key)",
    )
    parser.add_argument("--max-page-size", type=int, default=1000, help="cap on limit (default: 1000)")
    parser.add_argument(
        "--state-file",
        default=None,
        help="keep the changes made through the controls in this file and replay them on the next start, "
        "as a real Sabito keeps its customers (default: none, every start serves the seeded data)",
    )


def simulator_options(options: dict, *, verbose: bool) -> dict:
    """`serving()`'s keyword arguments from parsed command-line options."""
    return {
        "customers_per_business": options["customers"],
        "businesses": options["businesses"],
        "seed": options["seed"],
        "api_key": options["api_key"],
        "host": options["host"],
        "port": options["port"],
        "max_page_size": options["max_page_size"],
        "state_file": options["state_file"],
        "verbose": verbose,
    }


def describe_businesses(simulator: SabitoSimulator) -> str:
    return ", ".join(f"{business_id} ({name})" for business_id, name in simulator.business_names.items())


def serve_until_stopped(options: dict, *, on_ready: Callable[[SabitoSimulator], None]) -> None:
    """Serves in the foreground until Ctrl-C or SIGTERM (a process runner's stop), then
    stops cleanly instead of dying mid-write. Raises OSError or ValueError when the
    simulator cannot start (port taken, bad options)."""
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    with serving(**options) as simulator:
        on_ready(simulator)
        stopped.wait()


def main(argv: list[str] | None = None) -> int:
    """Prints the URL on the first line of stdout and the business ids, space
    separated, on the second (both flushed) so a parent process can read them."""
    parser = argparse.ArgumentParser(
        prog="python -m sabito_simulator",
        description="Serve a simulated Sabito API (GET /api/customers) until Ctrl-C.",
    )
    add_simulator_arguments(parser)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    options = vars(parser.parse_args(argv))

    def announce(simulator: SabitoSimulator) -> None:
        print(simulator.url, flush=True)
        print(" ".join(simulator.business_ids), flush=True)
        description = f"Sabito simulator on {simulator.url}: {describe_businesses(simulator)}. Ctrl-C to stop."
        print(description, file=sys.stderr, flush=True)

    try:
        serve_until_stopped(simulator_options(options, verbose=options["verbose"]), on_ready=announce)
    except (OSError, ValueError) as exc:
        parser.exit(2, f"Cannot start the Sabito simulator on {options['host']}:{options['port']}: {exc}\n")
    return 0
