#!/usr/bin/env python
"""The Sabito sync benchmark: the limit, a naive baseline and the project, side by side.

    .venv/bin/python benchmarks/run_benchmark.py           # N = 10,000 and 100,000, fan-out, status API
    .venv/bin/python benchmarks/run_benchmark.py --quick   # N = 500 and small fan-out/status: checks it runs

What it does, in one run on this machine:
  * starts the project's Sabito simulator (`python -m sabito_sync.simulator`) in its own
    process and drops and recreates a PostgreSQL database (default `nexpro_bench`);
  * for each N: the limit (every page fetched and parsed by the real client, no
    database), a naive baseline (one ORM lookup and one save() per record, kept in this
    file only), and the project: `sync_mapping` full sync of N new customers, the
    unchanged re-sync, and an incremental sync after 1% of the records were edited;
  * fan-out: M mappings of C customers each through Celery (a real `celery worker`
    process, prefork, concurrency 2, Redis broker) into the same database;
  * `GET /api/sabito/sync/status` for a tenant with 1,000 mappings, served by gunicorn
    and loaded by `wrk` with 20 connections.

Every measured sync runs in a fresh process, so the peak RSS reported is that scenario's
own. Queries are counted with a connection execute_wrapper (a counter, nothing kept).
It prints a table and writes the same figures as JSON to benchmarks/results/. Timings
are never asserted anywhere: they are for people to read and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
API_KEY = "bench-key"
PAGE_SIZE = 100
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (500,)
# The naive baseline writes ~300 records/s: past this many records it is measured on
# the first ones only and its per-record cost extrapolated (and labelled so).
BASELINE_SAMPLE = 10_000
LIMIT_ROUNDS = 3
SYNC_ROUNDS = 3
# Added to every Sabito response in the "over a network" scenario: a fast API nearby.
LINK_LATENCY_SECONDS = 0.02
TARGETS = {
    "full_vs_baseline_min": 10.0,
    "full_vs_limit_max": 1.5,
    "resync_vs_full_max": 0.6,
    "incremental_seconds_max": 2.0,
    "rss_growth_max": 0.20,
    "fanout_seconds_max": 60.0,
    "status_p95_ms_max": 100.0,
}


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
        "--baseline-sample", type=int, default=BASELINE_SAMPLE,
        help=f"records the naive baseline really writes before its cost is extrapolated (default: {BASELINE_SAMPLE:,})",
    )
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--skip-status", action="store_true")
    parser.add_argument("--output", type=Path, help="JSON file to write (default: benchmarks/results/<timestamp>.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        return run_child(options.child, json.loads(options.params))
    return Benchmark(options).run()


# --- Children: each measured scenario in a fresh process ----------------------------------


def run_child(name: str, params: dict) -> int:
    import django

    django.setup()
    children = {"limit": child_limit, "baseline": child_baseline, "sync": child_sync, "copy_floor": child_copy_floor}
    scenario = children[name]
    result = scenario(params)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result), flush=True)
    return 0


def child_limit(params: dict) -> dict:
    """Every page through the project's own client, parsed, and nothing else."""
    from sabito_sync.sync import sabito_client

    records = pages = 0
    with sabito_client() as client:
        started, process_start = time.perf_counter(), time.process_time()
        for page in client.iter_customer_pages(business_id=params["business_id"]):
            records += len(page.records)
            pages += 1
        seconds = time.perf_counter() - started
    cpu = time.process_time() - process_start
    return {"seconds": seconds, "records": records, "pages": pages, "process_cpu_seconds": cpu}


def child_baseline(params: dict) -> dict:
    """How sync code usually starts: per record, one lookup by Sabito id or email
    (case-insensitive, as `email__iexact`), then one save(). Same validation as the
    project, so the difference is the matching and writing."""
    from django.db.models import Q

    from sabito_sync.models import Customer, Tenant
    from sabito_sync.records import SYNCED_FIELDS, InvalidRecord, customer_values
    from sabito_sync.sync import sabito_client

    tenant = Tenant.objects.get(pk=params["tenant_id"])
    business_id, sample = params["business_id"], params["sample"]
    counts = {"created": 0, "updated": 0, "skipped": 0, "errors": 0}
    processed = 0
    with counted_queries() as queries, sabito_client() as client:
        started = time.perf_counter()
        for page in client.iter_customer_pages(business_id=business_id):
            for record in page.records:
                processed += 1
                try:
                    values = customer_values(record, business_id=business_id)
                except InvalidRecord:
                    counts["errors"] += 1
                    continue
                customer = Customer.objects.filter(
                    Q(sabito_customer_id=values["sabito_customer_id"]) | Q(email__iexact=values["email"]), tenant=tenant
                ).first()
                if customer is None:
                    Customer(tenant=tenant, **values).save()
                    counts["created"] += 1
                elif any(getattr(customer, name) != values[name] for name in SYNCED_FIELDS):
                    for name in SYNCED_FIELDS:
                        setattr(customer, name, values[name])
                    customer.save()
                    counts["updated"] += 1
                else:
                    counts["skipped"] += 1
                if processed == sample:
                    break
            if processed == sample:
                break
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "records": processed, "queries": queries.count, **counts}


def child_sync(params: dict) -> dict:
    """The project: `sync_mapping`, exactly as the task and the command call it."""
    from sabito_sync.models import SabitoMapping
    from sabito_sync.sync import sync_mapping

    mapping = SabitoMapping.objects.select_related("tenant").get(pk=params["mapping_id"])
    marks: list[int] = []
    with counted_queries() as queries, cpu_seconds() as cpu:
        started = time.perf_counter()
        result = sync_mapping(
            mapping=mapping, full_sync=params["full_sync"], on_page=lambda _result: marks.append(queries.count)
        )
        seconds = time.perf_counter() - started
    # Between two consecutive pages' callbacks lie exactly one page's statements; the
    # first page also carries the run's start, the end the run's finish.
    per_page = sorted({later - earlier for earlier, later in zip(marks, marks[1:])})
    return {
        "seconds": seconds,
        "success": result.success,
        "error": result.error,
        "records": result.processed,
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
        "pages": len(marks),
        "queries": queries.count,
        "queries_per_page": per_page,
        **cpu,
    }


def child_copy_floor(params: dict) -> dict:
    """The least PostgreSQL can do to store the N customers: the records fetched and
    validated beforehand, then one COPY in one transaction, no lookups at all. Not a
    way to sync (no matching, no counters); the floor under any way to sync."""
    import uuid

    from django.db import connection, transaction
    from django.utils import timezone

    from sabito_sync.models import Customer, Tenant
    from sabito_sync.records import SYNCED_FIELDS, customer_values, synced_values
    from sabito_sync.sync import sabito_client

    with sabito_client() as client:
        rows = [
            synced_values(customer_values(record, business_id=params["business_id"]))
            for page in client.iter_customer_pages(business_id=params["business_id"])
            for record in page.records
        ]
    tenant = Tenant.objects.create(name=f"COPY floor {params['size']}", slug=f"copy-floor-{params['size']}")
    meta = Customer._meta
    names = ("id", "tenant", *SYNCED_FIELDS, "created_at", "updated_at")
    columns = ", ".join(meta.get_field(name).column for name in names)
    now = timezone.now()
    with cpu_seconds() as cpu:
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {meta.db_table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((uuid.uuid4(), tenant.pk, *row, now, now))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "records": len(rows), **cpu}


@contextmanager
def cpu_seconds():
    """CPU time of this process and of its PostgreSQL backend over the block, the two
    halves of a sync's work (the simulator's share is the limit's)."""
    from django.db import connection

    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    figures: dict = {}
    process_start, backend_start = time.process_time(), process_cpu(backend)
    try:
        yield figures
    finally:
        figures["process_cpu_seconds"] = time.process_time() - process_start
        figures["database_cpu_seconds"] = process_cpu(backend) - backend_start


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process on this machine, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class QueryCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def counted_queries():
    from django.db import connection

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        yield counter


# --- The parent: databases, servers, scenarios, report ------------------------------------


class Benchmark:
    def __init__(self, options):
        self.options = options
        self.quick = options.quick
        if options.sizes:
            self.sizes = tuple(int(size) for size in options.sizes.split(","))
        else:
            self.sizes = QUICK_SIZES if self.quick else FULL_SIZES
        self.database_url = f"{options.postgres.rstrip('/')}/{options.database}"
        self.stamp = datetime.now(timezone.utc)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS_DIR / f"{self.stamp:%Y%m%dT%H%M%SZ}.log"
        self.output = options.output or RESULTS_DIR / f"{self.stamp:%Y%m%dT%H%M%SZ}.json"
        self.log = open(self.log_path, "w")
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("SABITO_", "DJANGO_"))},
            "DJANGO_SETTINGS_MODULE": "nexpro.settings",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": options.broker,
            "SABITO_API_KEY": API_KEY,
            "SABITO_PAGE_SIZE": str(PAGE_SIZE),
            "SABITO_SYNC_ON_STARTUP": "false",
            "DEBUG": "false",
        }

    def run(self) -> int:
        self.recreate_database()
        self.setup_django()
        report = {
            "date": f"{self.stamp:%Y-%m-%d %H:%M:%S} UTC",
            "quick": self.quick,
            "machine": machine(),
            "page_size": PAGE_SIZE,
            "sizes": {},
        }
        say(f"Benchmark {'(quick) ' if self.quick else ''}on {report['machine']['summary']}; log: {self.log_path}")
        if report["machine"]["load_average_1m"] > 0.5:
            load = report["machine"]["load_average_1m"]
            say(f"  note: load average {load:.2f}; other work on this machine skews timings")
        for size in self.sizes:
            report["sizes"][str(size)] = self.measure_size(size)
        if not self.options.skip_fanout:
            mappings, customers = (10, 20) if self.quick else (500, 200)
            report["fanout"] = self.measure_fanout(mappings, customers)
        if not self.options.skip_status:
            report["status"] = self.measure_status(20 if self.quick else 1000)
        report["targets"] = evaluate_targets(report)
        self.output.write_text(json.dumps(report, indent=2) + "\n")
        print()
        print(render_table(report))
        say(f"\nJSON: {self.output}")
        return 0

    # -- setup

    def recreate_database(self) -> None:
        import psycopg

        name = self.options.database
        say(f"Recreating database {name} ...")
        with psycopg.connect(f"{self.options.postgres.rstrip('/')}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT, env=self.env, check=True, stdout=self.log, stderr=self.log,
        )

    def setup_django(self) -> None:
        os.environ.update(self.env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()

    @contextmanager
    def simulator(self, *, customers: int, businesses: int, seed: int):
        process = subprocess.Popen(
            [sys.executable, "-m", "sabito_sync.simulator", "--port", "0", "--customers", str(customers),
             "--businesses", str(businesses), "--seed", str(seed), "--api-key", API_KEY],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        try:
            url = process.stdout.readline().strip()
            business_ids = process.stdout.readline().split()
            if not url:
                raise RuntimeError("the simulator did not start; see the log")
            yield Simulator(url, business_ids, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def child(self, name: str, params: dict, *, env: dict) -> dict:
        completed = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", name, "--params", json.dumps(params)],
            cwd=ROOT, env={**self.env, **env}, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"benchmark child {name} failed (exit {completed.returncode}); see {self.log_path}")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    # -- one size

    def measure_size(self, size: int) -> dict:
        from sabito_sync.models import SabitoMapping, Tenant

        say(f"\nN = {size:,}")
        with self.simulator(customers=size, businesses=1, seed=size) as simulator:
            business_id = simulator.business_ids[0]
            env = {"SABITO_API_URL": simulator.url}
            simulator.warm_up(business_id)
            figures: dict = {"simulator": simulator.throughput(business_id)}
            say(f"  simulator alone: {figures['simulator']['records_per_second']:,.0f} records/s")

            rounds = [self.child("limit", {"business_id": business_id}, env=env) for _ in range(LIMIT_ROUNDS)]
            limit = sorted(rounds, key=lambda r: r["seconds"])[len(rounds) // 2]  # the median round
            limit["rounds_seconds"] = [round(r["seconds"], 3) for r in rounds]
            figures["limit"] = limit
            say(f"  limit: {limit['seconds']:.2f} s (rounds {limit['rounds_seconds']})")

            sample = min(size, self.options.baseline_sample)
            baseline_tenant = Tenant.objects.create(name=f"Baseline {size}", slug=f"baseline-{size}")
            baseline = self.child(
                "baseline",
                {"tenant_id": str(baseline_tenant.pk), "business_id": business_id, "sample": sample},
                env=env,
            )
            baseline["measured_records"] = baseline["records"]
            baseline["extrapolated"] = sample < size
            baseline["seconds_measured"] = baseline["seconds"]
            baseline["seconds"] = baseline["seconds"] * size / baseline["records"]
            figures["baseline"] = baseline
            label = f" (extrapolated from the first {sample:,})" if baseline["extrapolated"] else ""
            say(f"  naive baseline: {baseline['seconds']:.1f} s{label}")

            # Full sync and re-sync in rounds, each into a tenant of its own: on two
            # cores one run's figures move by 20% or more with whatever else runs.
            rounds = []
            for round_number in range(1 if self.quick else SYNC_ROUNDS):
                mapping = self.new_mapping(business_id, f"Project {size} round {round_number + 1}")
                full = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": True}, env=env)
                resync = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": True}, env=env)
                rounds.append({"full": full, "resync": resync, "resync_vs_full": resync["seconds"] / full["seconds"]})
                say(f"  round {round_number + 1}: full sync {full['seconds']:.2f} s, "
                    f"unchanged re-sync {resync['seconds']:.2f} s ({resync['seconds'] / full['seconds']:.0%})")
            figures["full"] = median_by(rounds, "full")["full"]
            figures["resync"] = median_by(rounds, "resync")["resync"]
            figures["rounds"] = [
                {"full_seconds": round(r["full"]["seconds"], 3), "resync_seconds": round(r["resync"]["seconds"], 3),
                 "resync_vs_full": round(r["resync_vs_full"], 3)}
                for r in rounds
            ]
            figures["resync_vs_full"] = sorted(r["resync_vs_full"] for r in rounds)[len(rounds) // 2]

            latency_figures, mapping = self.measure_with_latency(simulator, business_id, size, env=env)
            figures.update(latency_figures)

            # The incremental sync continues from that last full sync's watermark.
            edited = simulator.edit(business_id, size // 100)
            simulator.warm_up(business_id)  # the edit made it sort its index again
            figures["incremental"] = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": False}, env=env)
            figures["incremental"]["edited"] = edited
            say(f"  incremental ({edited:,} edited): {figures['incremental']['seconds']:.2f} s")
            figures["copy_floor"] = self.child("copy_floor", {"business_id": business_id, "size": size}, env=env)
            say(f"  PostgreSQL floor (one COPY): {figures['copy_floor']['seconds']:.2f} s")
            figures["simulator"]["stats"] = simulator.stats()
        check_counts(size, figures)
        return figures

    def new_mapping(self, business_id: str, name: str):
        from sabito_sync.models import SabitoMapping, Tenant

        tenant = Tenant.objects.create(name=name, slug=name.lower().replace(" ", "-"))
        SabitoMapping.objects.filter(sabito_business_id=business_id).delete()  # a business maps to one tenant
        return SabitoMapping.objects.create(sabito_business_id=business_id, business_name=name, tenant=tenant)

    def measure_with_latency(self, simulator: Simulator, business_id: str, size: int, *, env: dict) -> tuple:
        """The limit and a full sync again with LINK_LATENCY_SECONDS added to every
        Sabito response, as over a real network: is the database work then hidden
        behind the fetching?"""
        simulator.set_latency(LINK_LATENCY_SECONDS)
        try:
            limit = self.child("limit", {"business_id": business_id}, env=env)
            mapping = self.new_mapping(business_id, f"Latency {size}")
            full = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": True}, env=env)
        finally:
            simulator.set_latency(0)
        milliseconds = LINK_LATENCY_SECONDS * 1000
        say(f"  with {milliseconds:.0f} ms per Sabito response: limit {limit['seconds']:.2f} s, "
            f"full sync {full['seconds']:.2f} s ({full['seconds'] / limit['seconds']:.2f}x)")
        return {"latency_limit": limit, "latency_full": full}, mapping

    # -- fan-out through Celery

    def measure_fanout(self, mapping_count: int, customers: int) -> dict:
        from django.db.models import Avg, Count, F, Max, Min, Q

        from nexpro.celery import app
        from sabito_sync.models import Customer, SabitoMapping, SyncRun, Tenant
        from sabito_sync.tasks import sync_all_mappings_task

        say(f"\nFan-out: {mapping_count} mappings x {customers} customers through Celery")
        if not redis_reachable(self.options.broker):
            say(f"  skipped: no Redis at {self.options.broker}")
            return {"skipped": f"no Redis at {self.options.broker}"}
        with self.simulator(customers=customers, businesses=mapping_count, seed=7) as simulator:
            SabitoMapping.objects.update(is_active=False)  # only the fan-out's mappings
            tenants = Tenant.objects.bulk_create(
                [Tenant(name=f"Fan-out {n}", slug=f"fanout-{n}") for n in range(mapping_count)]
            )
            SabitoMapping.objects.bulk_create(
                [
                    SabitoMapping(sabito_business_id=business_id, business_name=f"Fan-out {n}", tenant=tenant)
                    for n, (business_id, tenant) in enumerate(zip(simulator.business_ids, tenants))
                ]
            )
            for business_id in simulator.business_ids[:3]:
                simulator.warm_up(business_id)
            with app.connection_for_write() as connection:
                connection.default_channel.queue_purge(app.conf.task_default_queue)
            worker = self.start_worker(simulator.url)
            try:
                started = time.time()
                sync_all_mappings_task.apply_async(kwargs={"full_sync": True, "trigger": SyncRun.Trigger.BEAT})
                deadline = started + (120 if self.quick else 600)
                runs = SyncRun.objects.filter(mapping__tenant__in=tenants)
                while time.time() < deadline:
                    done = runs.filter(status__in=[SyncRun.Status.SUCCEEDED, SyncRun.Status.FAILED]).count()
                    if done >= mapping_count:
                        break
                    time.sleep(0.2)
                finished = runs.aggregate(
                    succeeded=Count("pk", filter=Q(status=SyncRun.Status.SUCCEEDED)),
                    failed=Count("pk", filter=Q(status=SyncRun.Status.FAILED)),
                    first_start=Min("started_at"),
                    last_finish=Max("finished_at"),
                    mean_run=Avg(F("finished_at") - F("started_at")),
                )
            finally:
                stop_process_group(worker)
        wall = (finished["last_finish"].timestamp() - started) if finished["last_finish"] else None
        mean_run = finished["mean_run"].total_seconds() if finished["mean_run"] else None
        concurrency = 2
        figures = {
            "mappings": mapping_count,
            "customers_per_mapping": customers,
            "concurrency": concurrency,
            "succeeded": finished["succeeded"],
            "failed": finished["failed"],
            "customers_created": Customer.objects.filter(tenant__in=tenants).count(),
            "seconds": wall,
            "worker_seconds_per_mapping": wall * concurrency / mapping_count if wall else None,
            "mean_run_seconds": mean_run,
        }
        if wall and mean_run is not None:
            # Worker time per mapping that is not the sync itself: the task's message,
            # the mapping's lookup, the run lock and its bookkeeping.
            figures["overhead_seconds_per_mapping"] = figures["worker_seconds_per_mapping"] - mean_run
        say(f"  {figures['succeeded']} succeeded, {figures['failed']} failed in {wall or float('nan'):.1f} s")
        return figures

    def start_worker(self, simulator_url: str) -> subprocess.Popen:
        from nexpro.celery import app

        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "nexpro", "worker", "--pool", "prefork", "--concurrency", "2",
             "--loglevel", "WARNING", "-n", f"bench-{os.getpid()}@%h"],
            cwd=ROOT, env={**self.env, "SABITO_API_URL": simulator_url, "LOG_LEVEL": "WARNING"},
            stdout=self.log, stderr=self.log, start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the Celery worker exited with {worker.returncode}; see {self.log_path}")
            if app.control.ping(destination=[f"bench-{os.getpid()}@{socket.gethostname()}"], timeout=0.5):
                return worker
        stop_process_group(worker)
        raise RuntimeError("the Celery worker did not answer a ping within 60 s")

    # -- the status API under load

    def measure_status(self, mapping_count: int) -> dict:
        say(f"\nGET /api/sabito/sync/status: {mapping_count} mappings, 20 concurrent clients")
        wrk = shutil.which("wrk")
        if wrk is None:
            say("  skipped: wrk is not installed (apt-get install -y wrk)")
            return {"skipped": "wrk is not installed"}
        token, tenant_id, small_tenant_id = self.status_fixtures(mapping_count)
        queries = {
            "10 mappings": status_query_count(token, small_tenant_id),
            f"{mapping_count} mappings": status_query_count(token, tenant_id),
        }
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "nexpro.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--access-logfile", "/dev/null", "--error-logfile", "-"],
            cwd=ROOT,
            env={**self.env, "LOG_LEVEL": "WARNING"},
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}/api/sabito/sync/status"
            wait_for_http(url, token, tenant_id)
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
                script.write(WRK_SCRIPT % {"token": token, "tenant": tenant_id})
            duration = 5 if self.quick else 15
            # A short warm-up: the first requests of each worker open connections and fill caches.
            subprocess.run([wrk, "-t2", "-c20", "-d2s", "-s", script.name, url], capture_output=True, check=True)
            completed = subprocess.run(
                [wrk, "-t2", "-c20", f"-d{duration}s", "--latency", "-s", script.name, url],
                capture_output=True, text=True, check=True,
            )
            os.unlink(script.name)
        finally:
            stop_process_group(server)
        self.log.write(completed.stdout)
        measured = json.loads(completed.stdout.strip().splitlines()[-1])
        figures = {
            "mappings": mapping_count,
            "connections": 20,
            "gunicorn_workers": 2,
            "duration_seconds": duration,
            "requests": measured["requests"],
            "requests_per_second": measured["requests"] / (measured["duration_us"] / 1e6),
            "non_2xx": measured["status_errors"],
            "socket_errors": measured["socket_errors"],
            "latency_ms": {key: measured[key] / 1000 for key in ("p50", "p90", "p95", "p99", "max")},
            "queries": queries,
            "constant_queries": len(set(queries.values())) == 1,
        }
        p95, rate = figures["latency_ms"]["p95"], figures["requests_per_second"]
        say(f"  p95 {p95:.1f} ms, {rate:.0f} req/s, queries {queries}")
        return figures

    def status_fixtures(self, mapping_count: int) -> tuple[str, str, str]:
        from django.contrib.auth import get_user_model
        from django.utils import timezone as django_timezone
        from rest_framework.authtoken.models import Token

        from sabito_sync.models import Membership, SabitoMapping, SyncRun, Tenant

        user = get_user_model().objects.create_user(username=f"bench-{mapping_count}", password="bench-password-1")
        token = Token.objects.create(user=user).key
        tenant_ids = []
        for count in (mapping_count, 10):
            tenant = Tenant.objects.create(name=f"Status {count}", slug=f"status-{count}-{os.getpid()}")
            Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.ADMIN)
            now = django_timezone.now()
            summary = {"success": True, "fullSync": False, "customersProcessed": 10, "created": 5, "updated": 3,
                       "skipped": 2, "errors": 0, "syncedAt": "2026-11-24T12:00:00.000Z"}
            mappings = SabitoMapping.objects.bulk_create(
                [
                    SabitoMapping(
                        sabito_business_id=f"status-{tenant.pk}-{n}", business_name=f"Business {n}", tenant=tenant,
                        metadata={"lastSyncedAt": "2026-11-24T11:55:00.000Z", "lastSyncResult": summary},
                    )
                    for n in range(count)
                ]
            )
            SyncRun.objects.bulk_create(
                [
                    SyncRun(mapping=mapping, trigger=SyncRun.Trigger.BEAT, status=SyncRun.Status.SUCCEEDED,
                            started_at=now, finished_at=now, heartbeat_at=now, customers_processed=10)
                    for mapping in mappings
                ]
            )
            tenant_ids.append(str(tenant.pk))
        return token, tenant_ids[0], tenant_ids[1]


WRK_SCRIPT = """
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["X-Tenant-ID"] = "%(tenant)s"

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d, '
    .. '"p50": %%d, "p90": %%d, "p95": %%d, "p99": %%d, "max": %%d}\\n',
    summary.requests, summary.duration, errors.status, errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def status_query_count(token: str, tenant_id: str) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    with CaptureQueriesContext(connection) as captured:
        response = client.get(
            "/api/sabito/sync/status", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_X_TENANT_ID=tenant_id
        )
    if response.status_code != 200:
        raise RuntimeError(f"GET /api/sabito/sync/status answered {response.status_code}: {response.content[:200]!r}")
    return len(captured)


# --- Servers and processes ------------------------------------------------------------------


class Simulator:
    def __init__(self, url: str, business_ids: list[str], process: subprocess.Popen):
        self.url, self.business_ids, self.process = url, business_ids, process

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
        request = Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        with urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def warm_up(self, business_id: str) -> None:
        # The first page of a business sorts its index; keep that out of every measurement.
        self._call("GET", f"/api/customers?businessId={business_id}&limit=1")

    def throughput(self, business_id: str) -> dict:
        """Records per second the simulator serves to a raw keep-alive client that does
        not parse them: what the server alone can do."""
        import http.client

        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port)
        started, records, offset = time.perf_counter(), 0, 0
        while True:
            connection.request(
                "GET", f"/api/customers?businessId={business_id}&limit={PAGE_SIZE}&offset={offset}",
                headers={"X-API-Key": API_KEY},
            )
            count = connection.getresponse().read().count(b'"sourceType"')
            records, offset = records + count, offset + PAGE_SIZE
            if count < PAGE_SIZE:
                break
        seconds = time.perf_counter() - started
        connection.close()
        return {"records": records, "seconds": seconds, "records_per_second": records / seconds}

    def set_latency(self, seconds: float) -> None:
        self._call("POST", "/_simulator/faults", {"slowSeconds": seconds} if seconds else {})

    def edit(self, business_id: str, count: int) -> int:
        return len(self._call("POST", "/_simulator/edit", {"businessId": business_id, "count": count})["ids"])

    def stats(self) -> dict:
        stats = self._call("GET", "/_simulator/stats")
        return {key: stats[key] for key in ("customerRequests", "recordsServed")}


def median_by(rounds: list[dict], key: str) -> dict:
    return sorted(rounds, key=lambda r: r[key]["seconds"])[len(rounds) // 2]


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a server this script started in its own session, and its children."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, token: str, tenant_id: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            request = Request(url, headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant_id})
            with urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within 30 s")


def redis_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2):
            return True
    except OSError:
        return False


def machine() -> dict:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores = os.cpu_count()
    postgres = "?"
    try:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = cursor.fetchone()[0].split()[0]
    except Exception:  # the figures matter more than the version string
        pass
    python = platform.python_version()
    return {
        "cores": cores,
        "memory_gib": round(memory_gib, 1),
        "python": python,
        "postgresql": postgres,
        "platform": platform.platform(),
        "load_average_1m": os.getloadavg()[0],
        "summary": f"{cores} cores, {memory_gib:.0f} GiB, PostgreSQL {postgres}, Python {python}",
    }


# --- Checks, targets and the table ----------------------------------------------------------


def check_counts(size: int, figures: dict) -> None:
    """The benchmark is worthless if the sync did not do the work: verify the counters."""
    full, resync, incremental = figures["full"], figures["resync"], figures["incremental"]
    problems = []
    if not (full["success"] and full["created"] == size and full["records"] == size):
        problems.append(f"full sync: {full}")
    if not (resync["success"] and resync["skipped"] == size and resync["records"] == size):
        problems.append(f"re-sync: {resync}")
    if not (incremental["success"] and incremental["updated"] == incremental["edited"]):
        problems.append(f"incremental: {incremental}")
    latency_full = figures.get("latency_full")
    if latency_full and not (latency_full["success"] and latency_full["created"] == size):
        problems.append(f"full sync with latency: {latency_full}")
    if problems:
        raise RuntimeError("the sync's counters are not what the scenario implies: " + "; ".join(problems))


def evaluate_targets(report: dict) -> dict:
    targets: dict = {}
    sizes = report["sizes"]
    largest = str(max(int(size) for size in sizes))
    figures = sizes[largest]
    full, limit, baseline = figures["full"]["seconds"], figures["limit"]["seconds"], figures["baseline"]["seconds"]
    targets[f"full sync of {int(largest):,} >= 10x faster than the naive baseline"] = verdict(
        baseline / full, ">=", TARGETS["full_vs_baseline_min"], "x"
    )
    targets[f"full sync of {int(largest):,} within 1.5x of the limit"] = verdict(
        full / limit, "<=", TARGETS["full_vs_limit_max"], "x"
    )
    targets["unchanged re-sync <= 60% of the full sync (median round)"] = verdict(
        figures["resync_vs_full"], "<=", TARGETS["resync_vs_full_max"], ""
    )
    targets[f"incremental sync ({figures['incremental']['edited']:,} changed) under 2 s"] = verdict(
        figures["incremental"]["seconds"], "<", TARGETS["incremental_seconds_max"], " s"
    )
    per_page = sorted({count for size in sizes.values() for key in ("full", "resync", "incremental")
                       for count in size[key]["queries_per_page"]})
    targets["constant SQL queries per page"] = {"value": per_page, "met": len(per_page) == 1}
    if len(sizes) > 1:
        smallest = str(min(int(size) for size in sizes))
        growth = figures["full"]["peak_rss_mb"] / sizes[smallest]["full"]["peak_rss_mb"] - 1
        targets[f"peak RSS grows < 20% from {int(smallest):,} to {int(largest):,}"] = verdict(
            growth * 100, "<", TARGETS["rss_growth_max"] * 100, "%"
        )
    fanout = report.get("fanout")
    if fanout and fanout.get("seconds") is not None:
        targets[f"fan-out of {fanout['mappings']} mappings under 60 s"] = verdict(
            fanout["seconds"], "<", TARGETS["fanout_seconds_max"], " s"
        )
    status = report.get("status")
    if status and "latency_ms" in status:
        targets["status API p95 under 100 ms (20 clients)"] = verdict(
            status["latency_ms"]["p95"], "<", TARGETS["status_p95_ms_max"], " ms"
        )
        targets["status API constant query count"] = {"value": status["queries"], "met": status["constant_queries"]}
    return targets


def verdict(value: float, relation: str, bound: float, unit: str) -> dict:
    met = {"<": value < bound, "<=": value <= bound, ">=": value >= bound}[relation]
    return {"value": round(value, 3), "bound": f"{relation} {bound:g}{unit}", "met": met}


SCENARIOS = (
    ("limit", "limit: fetch + parse, no database"),
    ("baseline", "naive baseline: lookup + save() per record"),
    ("full", "project: full sync, all new"),
    ("resync", "project: unchanged re-sync"),
    ("incremental", "project: incremental, 1% changed"),
    ("copy_floor", "PostgreSQL floor: one COPY, no lookups"),
    ("latency_limit", f"limit, {LINK_LATENCY_SECONDS * 1000:.0f} ms per Sabito response"),
    ("latency_full", f"project: full sync, {LINK_LATENCY_SECONDS * 1000:.0f} ms per Sabito response"),
)


def render_table(report: dict) -> str:
    header = (
        "N", "scenario", "wall s", "records/s", "SQL/page", "CPU s sync+DB", "peak RSS MB", "vs limit", "baseline/this"
    )
    rows = []
    for size, figures in report["sizes"].items():
        limit = figures["limit"]["seconds"]
        baseline = figures["baseline"]["seconds"]
        for key, label in SCENARIOS:
            if key not in figures:
                continue
            row = figures[key]
            seconds = row["seconds"]
            if key in ("full", "resync") and len(figures.get("rounds", [])) > 1:
                label += f" (median of {len(figures['rounds'])})"
            if key == "baseline" and row["extrapolated"]:
                label += f" (extrapolated from the first {row['measured_records']:,})"
            records = row["edited"] if key == "incremental" else int(size)
            if key == "baseline":
                per_page = f"~{row['queries'] / max(1, row['measured_records']) * PAGE_SIZE:.0f}"
            elif key in ("full", "resync", "incremental", "latency_full"):
                per_page = ",".join(str(count) for count in row["queries_per_page"]) or "-"
            else:
                per_page = ""
            cpu = ""
            if "database_cpu_seconds" in row:
                cpu = f"{row['process_cpu_seconds']:.2f}+{row['database_cpu_seconds']:.2f}"
            elif "process_cpu_seconds" in row:
                cpu = f"{row['process_cpu_seconds']:.2f}"
            rows.append((
                f"{int(size):,}", label, f"{seconds:.2f}", f"{records / seconds:,.0f}", per_page, cpu,
                f"{row['peak_rss_mb']:.0f}",
                f"{seconds / limit:.2f}x" if key in ("full", "resync", "copy_floor") else
                f"{seconds / figures['latency_limit']['seconds']:.2f}x" if key == "latency_full" else "",
                f"{baseline / seconds:.1f}x" if key == "full" else "",
            ))
        simulator = figures["simulator"]
        rows.append((f"{int(size):,}", "simulator alone: raw client, no parsing", f"{simulator['seconds']:.2f}",
                     f"{simulator['records_per_second']:,.0f}", "", "", "", "", ""))
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(header, widths))]
    lines.append("-+-".join("-" * width for width in widths))
    lines += [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in rows]
    fanout = report.get("fanout")
    if fanout and fanout.get("seconds") is not None:
        lines.append("")
        lines.append(
            f"Fan-out: {fanout['mappings']} mappings x {fanout['customers_per_mapping']} customers, Celery prefork x2, "
            f"Redis: {fanout['seconds']:.1f} s wall, {fanout['worker_seconds_per_mapping'] * 1000:.0f} ms worker time "
            f"per mapping (sync {fanout['mean_run_seconds'] * 1000:.0f} ms + overhead "
            f"{fanout['overhead_seconds_per_mapping'] * 1000:.0f} ms); "
            f"{fanout['succeeded']} succeeded, {fanout['failed']} failed"
        )
    status = report.get("status")
    if status and "latency_ms" in status:
        latency = status["latency_ms"]
        lines.append(
            f"Status API, {status['mappings']} mappings, 20 connections, gunicorn x2: p50 {latency['p50']:.1f} ms, "
            f"p95 {latency['p95']:.1f} ms, p99 {latency['p99']:.1f} ms, {status['requests_per_second']:.0f} req/s, "
            f"queries per request {status['queries']}"
        )
    lines.append("")
    if report["quick"]:
        lines.append("Quick mode: the targets are for N = 100,000; shown for information only.")
    for size, figures in report["sizes"].items():
        if "latency_full" in figures:
            ratio = figures["latency_full"]["seconds"] / figures["latency_limit"]["seconds"]
            lines.append(
                f"[info] N = {int(size):,}, {LINK_LATENCY_SECONDS * 1000:.0f} ms per Sabito response: "
                f"full sync {ratio:.2f}x its limit"
            )
    for name, target in report["targets"].items():
        value = target["value"]
        bound = target.get("bound", "")
        lines.append(f"[{'met' if target['met'] else 'NOT MET'}] {name}: {value} {bound}".rstrip())
    return "\n".join(lines)


def say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
