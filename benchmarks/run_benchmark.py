#!/usr/bin/env python
"""The Sabito sync benchmark: the limit, a naive baseline and the project, side by side.

    .venv/bin/python benchmarks/run_benchmark.py           # N = 10,000 and 100,000, fan-out, status API
    .venv/bin/python benchmarks/run_benchmark.py --quick   # N = 500 and small fan-out/status: checks it runs

What it does, in one run on this machine:
  * serves the project's Sabito simulator from this process (a thread; every client of
    it runs in a process of its own) and drops and recreates a PostgreSQL database
    (default `nexpro_bench`);
  * for each N: the limit (every page fetched and parsed by the real client, no
    database), a naive baseline (one ORM lookup and one save() per record, kept in the
    benchmark only), and the project: `sync_mapping` full sync of N new customers, the
    unchanged re-sync, and an incremental sync after 1% of the records were edited;
  * fan-out: M mappings of C customers each through Celery (a real `celery worker`
    process, prefork, concurrency 2, Redis broker) into the same database;
  * a beat tick of 10,000 mappings with nothing new through the same kind of worker,
    from the fan-out to the last run recorded;
  * `GET /api/sabito/sync/status` for a tenant with 1,000 mappings, served by gunicorn
    and loaded by `wrk` with 20 connections.

Every measured scenario runs in a fresh process (`scenarios.py`), so the peak RSS
reported is that scenario's own. Queries are counted with a connection execute_wrapper
(a counter, nothing kept). `runner.py` orchestrates; `report.py` checks the counters,
judges the targets and prints a table; the same figures are written as JSON to
benchmarks/results/. Timings are never asserted anywhere: they are for people to read
and compare.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner import Benchmark
from scenarios import BASELINE_SAMPLE


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the Sabito sync against its limit and a naive baseline.")
    parser.add_argument(
        "--quick", action="store_true", help="N=500 and a small fan-out/status run: checks it runs (CI)"
    )
    parser.add_argument("--sizes", help="comma-separated N values (default: 10000,100000; quick: 500)")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument(
        "--database", default="nexpro_bench", help="database to drop and recreate (default: nexpro_bench)"
    )
    parser.add_argument(
        "--broker", default="redis://127.0.0.1:6379/14", help="Redis URL for the fan-out (default: db 14)"
    )
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=BASELINE_SAMPLE,
        help=f"records the naive baseline really writes before its cost is extrapolated (default: {BASELINE_SAMPLE:,})",
    )
    parser.add_argument(
        "--write-batch-records",
        type=int,
        help="SABITO_WRITE_BATCH_RECORDS of the syncs (default: the project's default; quick: 200, so that "
        "N=500 is written in several batches)",
    )
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--skip-tick", action="store_true")
    parser.add_argument("--skip-status", action="store_true")
    parser.add_argument("--output", type=Path, help="JSON file to write (default: benchmarks/results/<timestamp>.json)")
    return Benchmark(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
