"""The benchmark script's quick mode runs end to end (PostgreSQL lane only: the
benchmark measures PostgreSQL). Its timings are never asserted, only that every
scenario ran and did the work it claims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="the benchmark needs PostgreSQL"
    ),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the benchmark's fan-out needs Redis"),
]


def test_quick_benchmark_runs_every_scenario_and_writes_its_report(tmp_path, benchmark_database):
    server, database = benchmark_database
    broker = os.environ["REDIS_URL"]  # the benchmark names a queue of its own on it
    output = tmp_path / "report.json"

    completed = subprocess.run(
        [
            sys.executable,
            "benchmarks/run_benchmark.py",
            "--quick",
            "--postgres",
            server,
            "--database",
            database,
            "--broker",
            broker,
            "--output",
            str(output),
        ],
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if not key.startswith("PYTEST")},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(output.read_text())
    figures = report["sizes"]["500"]
    assert set(figures) >= {
        "fetch_limit",
        "limit",
        "baseline",
        "full",
        "resync",
        "resync_from_memory",
        "incremental",
        "copy_floor",
        "latency_limit",
        "latency_full",
        "rounds",
    }
    assert (figures["full"]["created"], figures["resync"]["skipped"]) == (500, 500)
    assert (figures["resync_from_memory"]["skipped"], figures["resync_from_memory"]["records"]) == (500, 500)
    assert figures["latency_full"]["created"] == 500
    assert figures["full"]["queries_per_batch"] == [4]  # 500 new records in batches of 200: no candidates to find
    assert figures["resync"]["queries_per_batch"] == [5]
    assert report["fanout"]["succeeded"] == report["fanout"]["mappings"]
    tick = report["tick"]
    assert tick["succeeded"] == tick["runs"] == tick["tick_counted"] == tick["mappings"] == 200
    assert tick["tick_completed"] and tick["runs_with_records"] == 0
    assert tick["nothing_new"]["statements_per_mapping"] <= 3
    assert "[met] constant SQL queries per batch" in completed.stdout


@pytest.fixture
def benchmark_database():
    """(server URL, database name): a database the benchmark creates, dropped afterwards."""
    import psycopg

    server = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=""))
    name = f"nexpro_bench_test_{os.getpid()}"
    yield server, name
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
