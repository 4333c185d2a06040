"""The benchmark's orchestration: the database, the servers and processes, each size's
scenarios in order, the fan-out through Celery and the status API under load.

The simulator is served by a thread of this process (`with serving(...)`, as the
tests and `manage.py sabito_simulator` start it); every measured scenario runs in a
process of its own (`scenarios.py`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from report import check_counts, evaluate_targets, render_table
from scenarios import LINK_LATENCY_SECONDS, PAGE_SIZE

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
SCENARIOS_SCRIPT = Path(__file__).resolve().parent / "scenarios.py"
API_KEY = "bench-key"
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (500,)
QUICK_WRITE_BATCH_RECORDS = 200
LIMIT_ROUNDS = 3
SYNC_ROUNDS = 3
# What each round of the syncs measures, each scenario in its own process.
ROUND_SCENARIOS = ("fetch_limit", "full", "resync", "resync_from_memory", "copy_floor")
# A beat tick in which no mapping finds anything new: what the fan-out, the broker and
# each run's bookkeeping cost when there is no sync work at all.
TICK_MAPPINGS = 10_000
QUICK_TICK_MAPPINGS = 200
# Mappings of the tick also synced one by one in a process of their own, for the
# statements and milliseconds of one mapping, in-process and as a chunk task's body.
NOTHING_NEW_SAMPLE = 200


class Benchmark:
    def __init__(self, options):
        self.options = options
        self.quick = options.quick
        if options.sizes:
            self.sizes = tuple(int(size) for size in options.sizes.split(","))
        else:
            self.sizes = QUICK_SIZES if self.quick else FULL_SIZES
        # None: the project's own default.
        self.write_batch_records = options.write_batch_records or (QUICK_WRITE_BATCH_RECORDS if self.quick else None)
        self.database_url = f"{options.postgres.rstrip('/')}/{options.database}"
        self.stamp = datetime.now(UTC)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS_DIR / f"{self.stamp:%Y%m%dT%H%M%SZ}.log"
        self.output = options.output or RESULTS_DIR / f"{self.stamp:%Y%m%dT%H%M%SZ}.json"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed when the run ends)
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("SABITO_", "DJANGO_"))},
            "DJANGO_SETTINGS_MODULE": "nexpro.settings",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": options.broker,
            # Its own queue: another run on the same broker never takes this run's tasks.
            "CELERY_QUEUE": f"bench-{os.getpid()}",
            "SABITO_API_KEY": API_KEY,
            "SABITO_PAGE_SIZE": str(PAGE_SIZE),
            "SABITO_SYNC_ON_STARTUP": "false",
            "DEBUG": "false",
        }
        if self.write_batch_records:
            self.env["SABITO_WRITE_BATCH_RECORDS"] = str(self.write_batch_records)

    def run(self) -> int:
        self.recreate_database()
        self.setup_django()
        report = {
            "date": f"{self.stamp:%Y-%m-%d %H:%M:%S} UTC",
            "quick": self.quick,
            "machine": machine(),
            "page_size": PAGE_SIZE,
            "write_batch_records": self.write_batch_records,
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
        if not self.options.skip_tick:
            report["tick"] = self.measure_tick(QUICK_TICK_MAPPINGS if self.quick else TICK_MAPPINGS)
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
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=self.log,
            stderr=self.log,
        )

    def setup_django(self) -> None:
        os.environ.update(self.env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()

    def simulator(self, *, customers: int, businesses: int, seed: int):
        """The project's simulator, served by a thread of this process: every client it
        serves (the measured scenarios, the Celery worker) runs in a process of its own."""
        from sabito_simulator import serving

        return serving(customers_per_business=customers, businesses=businesses, seed=seed, api_key=API_KEY)

    def child(self, name: str, params: dict, *, env: dict) -> dict:
        """Run one scenario of `scenarios.py` in a fresh process; its figures."""
        completed = subprocess.run(
            [sys.executable, str(SCENARIOS_SCRIPT), name, json.dumps(params)],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"benchmark child {name} failed (exit {completed.returncode}); see {self.log_path}")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    # -- one size

    def measure_size(self, size: int) -> dict:
        from sabito_sync.models import Tenant

        say(f"\nN = {size:,}")
        with self.simulator(customers=size, businesses=1, seed=size) as simulator:
            business_id = simulator.business_ids[0]
            env = {"SABITO_API_URL": simulator.url}
            warm_up(simulator, business_id)
            figures: dict = {"simulator": self.child("simulator_alone", {"business_id": business_id}, env=env)}
            say(f"  simulator alone: {figures['simulator']['records_per_second']:,.0f} records/s")

            rounds = [self.child("limit", {"business_id": business_id}, env=env) for _ in range(LIMIT_ROUNDS)]
            limit = sorted(rounds, key=lambda r: r["seconds"])[len(rounds) // 2]  # the median round
            limit["rounds_seconds"] = [round(r["seconds"], 3) for r in rounds]
            figures["limit"] = limit
            say(f"  project client: {limit['seconds']:.2f} s (rounds {limit['rounds_seconds']})")

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
            # cores one run's figures move by 20% or more with whatever else runs. Each
            # round measures its own limits right beside its syncs (the fetch limit just
            # before, the database floor just after), so a round's ratios compare
            # figures taken within seconds of each other, not minutes: the targets are
            # judged on the median of the rounds' ratios.
            rounds = []
            for round_number in range(1 if self.quick else SYNC_ROUNDS):
                mapping = self.new_mapping(business_id, f"Project {size} round {round_number + 1}")
                fetch_limit = self.child("fetch_limit", {"business_id": business_id}, env=env)
                full = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": True}, env=env)
                resync = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": True}, env=env)
                # The same re-sync once more, its pages fetched before the clock starts:
                # what the re-sync costs beyond getting the pages.
                from_memory = self.child(
                    "sync", {"mapping_id": str(mapping.pk), "full_sync": True, "from_memory": True}, env=env
                )
                floor = self.child(
                    "copy_floor", {"business_id": business_id, "size": size, "round": round_number + 1}, env=env
                )
                rounds.append(
                    {
                        "fetch_limit": fetch_limit,
                        "full": full,
                        "resync": resync,
                        "resync_from_memory": from_memory,
                        "copy_floor": floor,
                    }
                )
                say(
                    f"  round {round_number + 1}: fetch limit {fetch_limit['seconds']:.2f} s, "
                    f"full sync {full['seconds']:.2f} s ({full['seconds'] / floor['seconds']:.2f}x the floor), "
                    f"unchanged re-sync {resync['seconds']:.2f} s "
                    f"({resync['seconds'] / fetch_limit['seconds']:.2f}x the fetch limit; "
                    f"{from_memory['seconds']:.2f} s with its pages from memory), "
                    f"database floor {floor['seconds']:.2f} s"
                )
            for key in ROUND_SCENARIOS:
                figures[key] = median_by(rounds, key)[key]
            figures["fetch_limit"]["rounds_seconds"] = [round(r["fetch_limit"]["seconds"], 3) for r in rounds]
            figures["rounds"] = [round_ratios(r) for r in rounds]
            for ratio in (
                "full_vs_database_floor",
                "resync_vs_fetch_limit",
                "resync_from_memory_vs_fetch_limit",
                "resync_vs_full",
            ):
                figures[ratio] = median([r[ratio] for r in figures["rounds"]])

            latency_figures, mapping = self.measure_with_latency(simulator, business_id, size, env=env)
            figures.update(latency_figures)

            # The incremental sync continues from that last full sync's watermark.
            edited = len(simulator.edit(business_id, size // 100))
            warm_up(simulator, business_id)  # the edit made it sort its index again
            figures["incremental"] = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": False}, env=env)
            figures["incremental"]["edited"] = edited
            say(f"  incremental ({edited:,} edited): {figures['incremental']['seconds']:.2f} s")
            figures["simulator"]["stats"] = {key: simulator.stats[key] for key in ("customerRequests", "recordsServed")}
        check_counts(size, figures)
        return figures

    def new_mapping(self, business_id: str, name: str):
        from sabito_sync.models import SabitoMapping, Tenant

        tenant = Tenant.objects.create(name=name, slug=name.lower().replace(" ", "-"))
        SabitoMapping.objects.filter(sabito_business_id=business_id).delete()  # a business maps to one tenant
        return SabitoMapping.objects.create(sabito_business_id=business_id, business_name=name, tenant=tenant)

    def measure_with_latency(self, simulator, business_id: str, size: int, *, env: dict) -> tuple:
        """The project client and a full sync again with LINK_LATENCY_SECONDS added to every
        Sabito response, as over a real network: is the database work then hidden
        behind the fetching?"""
        simulator.set_faults({"slow_seconds": LINK_LATENCY_SECONDS})
        try:
            limit = self.child("limit", {"business_id": business_id}, env=env)
            mapping = self.new_mapping(business_id, f"Latency {size}")
            full = self.child("sync", {"mapping_id": str(mapping.pk), "full_sync": True}, env=env)
        finally:
            simulator.set_faults(None)
        milliseconds = LINK_LATENCY_SECONDS * 1000
        say(
            f"  with {milliseconds:.0f} ms per Sabito response: project client {limit['seconds']:.2f} s, "
            f"full sync {full['seconds']:.2f} s ({full['seconds'] / limit['seconds']:.2f}x)"
        )
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
                    for n, (business_id, tenant) in enumerate(zip(simulator.business_ids, tenants, strict=False))
                ]
            )
            for business_id in simulator.business_ids[:3]:
                warm_up(simulator, business_id)
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

    # -- a beat tick with nothing new

    def measure_tick(self, mapping_count: int) -> dict:
        """A beat tick of `mapping_count` mappings none of which finds anything new,
        through a real `celery worker` (prefork, concurrency 2) and Redis: from the
        fan-out task being sent to the last run recorded."""
        from django.db.models import Count, Max, Q
        from django.utils import timezone as django_timezone

        from nexpro.celery import app
        from sabito_sync.engine.client import format_timestamp
        from sabito_sync.models import SabitoMapping, SyncRun, SyncTick, Tenant
        from sabito_sync.tasks import fanout_chunks, sync_all_mappings_task

        say(f"\nBeat tick: {mapping_count:,} mappings with nothing new, through Celery")
        if not redis_reachable(self.options.broker):
            say(f"  skipped: no Redis at {self.options.broker}")
            return {"skipped": f"no Redis at {self.options.broker}"}
        with self.simulator(customers=1, businesses=mapping_count, seed=11) as simulator:
            SabitoMapping.objects.update(is_active=False)  # only the tick's mappings
            tenants = Tenant.objects.bulk_create(
                [Tenant(name=f"Tick {n}", slug=f"tick-{n}") for n in range(mapping_count)], batch_size=2000
            )
            # Synced a moment ago: each incremental sync asks for what changed since now.
            watermark = format_timestamp(django_timezone.now())
            mappings = SabitoMapping.objects.bulk_create(
                [
                    SabitoMapping(
                        sabito_business_id=business_id,
                        business_name=f"Tick {n}",
                        tenant=tenant,
                        metadata={"lastSyncedAt": watermark},
                    )
                    for n, (business_id, tenant) in enumerate(zip(simulator.business_ids, tenants, strict=False))
                ],
                batch_size=2000,
            )
            env = {"SABITO_API_URL": simulator.url}
            sample = [str(mapping.pk) for mapping in mappings[:NOTHING_NEW_SAMPLE]]
            nothing_new = self.child("nothing_new", {"mapping_ids": sample}, env=env)
            say(
                f"  one mapping: {nothing_new['statements_per_mapping']:g} statements, "
                f"{nothing_new['in_process_ms']:.1f} ms in-process, "
                f"{nothing_new['chunk_task_ms_per_mapping']:.1f} ms of a chunk task's body"
            )
            with app.connection_for_write() as connection:
                connection.default_channel.queue_purge(app.conf.task_default_queue)
            worker = self.start_worker(simulator.url)
            try:
                sent_at = django_timezone.now()
                started = time.time()
                sync_all_mappings_task.apply_async(kwargs={"full_sync": False, "trigger": SyncRun.Trigger.BEAT})
                deadline = started + (120 if self.quick else 600)
                ticks = SyncTick.objects.filter(started_at__gte=sent_at)
                while time.time() < deadline and not ticks.filter(completed_at__isnull=False).exists():
                    time.sleep(0.2)
                tick = ticks.first()
                finished = SyncRun.objects.filter(trigger=SyncRun.Trigger.BEAT, started_at__gte=sent_at).aggregate(
                    runs=Count("pk"),
                    succeeded=Count("pk", filter=Q(status=SyncRun.Status.SUCCEEDED)),
                    processed=Count("pk", filter=Q(customers_processed__gt=0)),
                    last_finish=Max("finished_at"),
                )
            finally:
                stop_process_group(worker)
        wall = (finished["last_finish"].timestamp() - started) if finished["last_finish"] else None
        figures = {
            "mappings": mapping_count,
            "concurrency": 2,
            # What the fan-out made of SABITO_FANOUT_CHUNK_SIZE for this many mappings.
            "chunk_size": len(fanout_chunks([""] * mapping_count, chunk_size=nothing_new["chunk_size"])[0]),
            "runs": finished["runs"],
            "succeeded": finished["succeeded"],
            "runs_with_records": finished["processed"],
            "tick_counted": tick.finished if tick else 0,
            "tick_completed": bool(tick and tick.completed_at),
            "seconds": wall,
            "worker_ms_per_mapping": wall * 2 / mapping_count * 1000 if wall else None,
            "nothing_new": nothing_new,
        }
        say(
            f"  {figures['succeeded']:,} of {mapping_count:,} runs succeeded in {wall or float('nan'):.1f} s "
            f"({figures['worker_ms_per_mapping'] or float('nan'):.1f} ms of worker time per mapping)"
        )
        return figures

    def start_worker(self, simulator_url: str) -> subprocess.Popen:
        from nexpro.celery import app

        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "nexpro",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
                "-n",
                f"bench-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env={**self.env, "SABITO_API_URL": simulator_url, "LOG_LEVEL": "WARNING"},
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
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
        port, probe_port = free_port(), free_port()
        # gunicorn reads the project's gunicorn.conf.py from ROOT, as it does deployed:
        # its workers restart every 5,000-7,500 requests, once or twice in a run at this load,
        # and the percentiles include those restarts (~0.5 s of Django loading each). Its
        # jitter keeps the two workers from restarting together; with 100 of 1,000 they
        # did, every few seconds, and p95 was 400 ms instead of 60.
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "nexpro.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--access-logfile",
                "/dev/null",
                "--error-logfile",
                "-",
            ],
            cwd=ROOT,
            env={**self.env, "LOG_LEVEL": "WARNING", "GUNICORN_PROBE_BIND": f"127.0.0.1:{probe_port}"},
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
                capture_output=True,
                text=True,
                check=True,
            )
            # Probes while 256 connections load the status endpoint (the load that failed
            # 11 of 15 probes with a 1 s timeout when they shared the API's port).
            with ProbesUnderLoad(
                {"API port": f"http://127.0.0.1:{port}/healthz", "probe port": f"http://127.0.0.1:{probe_port}/healthz"}
            ) as probes:
                subprocess.run(
                    [wrk, "-t2", "-c256", f"-d{duration}s", "-s", script.name, url], capture_output=True, check=True
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
            "probes_under_256_connections": probes.figures(),
        }
        p95, rate = figures["latency_ms"]["p95"], figures["requests_per_second"]
        say(f"  p95 {p95:.1f} ms, {rate:.0f} req/s, queries {queries}")
        for where, measured in figures["probes_under_256_connections"].items():
            say(
                f"  /healthz on the {where} under 256 connections: {measured['failed']} of {measured['sent']} "
                f"failed (1 s timeout), p50 {measured['p50_ms']:.0f} ms, max {measured['max_ms']:.0f} ms"
            )
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
            summary = {
                "success": True,
                "fullSync": False,
                "customersProcessed": 10,
                "created": 5,
                "updated": 3,
                "skipped": 2,
                "errors": 0,
                "syncedAt": "2026-11-24T12:00:00.000Z",
            }
            mappings = SabitoMapping.objects.bulk_create(
                [
                    SabitoMapping(
                        sabito_business_id=f"status-{tenant.pk}-{n}",
                        business_name=f"Business {n}",
                        tenant=tenant,
                        metadata={"lastSyncedAt": "2026-11-24T11:55:00.000Z", "lastSyncResult": summary},
                    )
                    for n in range(count)
                ]
            )
            SyncRun.objects.bulk_create(
                [
                    SyncRun(
                        mapping=mapping,
                        trigger=SyncRun.Trigger.BEAT,
                        status=SyncRun.Status.SUCCEEDED,
                        started_at=now,
                        finished_at=now,
                        heartbeat_at=now,
                        customers_processed=10,
                    )
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


def warm_up(simulator, business_id: str) -> None:
    # The first page of a business sorts its index; keep that out of every measurement.
    request = Request(f"{simulator.url}/api/customers?businessId={business_id}&limit=1", headers={"X-API-Key": API_KEY})
    with urlopen(request, timeout=60) as response:
        response.read()


def median_by(rounds: list[dict], key: str) -> dict:
    return sorted(rounds, key=lambda r: r[key]["seconds"])[len(rounds) // 2]


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def round_ratios(sync_round: dict) -> dict:
    """One round's seconds and the ratios the targets judge, each against that round's own limits."""
    seconds = {key: sync_round[key]["seconds"] for key in ROUND_SCENARIOS}
    return {
        **{f"{key}_seconds": round(value, 3) for key, value in seconds.items()},
        "full_vs_database_floor": round(seconds["full"] / seconds["copy_floor"], 3),
        "resync_vs_fetch_limit": round(seconds["resync"] / seconds["fetch_limit"], 3),
        "resync_from_memory_vs_fetch_limit": round(seconds["resync_from_memory"] / seconds["fetch_limit"], 3),
        "resync_vs_full": round(seconds["resync"] / seconds["full"], 3),
    }


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a server this script started in its own session, and its children."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class ProbesUnderLoad:
    """GET each URL every quarter second from threads of their own, with a 1 s timeout
    (Kubernetes' default), while the block runs; `figures()` per URL name."""

    TIMEOUT = 1.0

    def __init__(self, urls: dict[str, str]):
        import threading

        self.urls = urls
        self.results: dict[str, list[float | None]] = {name: [] for name in urls}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.probe, args=(name,), daemon=True) for name in urls]

    def __enter__(self) -> ProbesUnderLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def probe(self, name: str) -> None:
        while not self.stop.wait(0.25):
            started = time.monotonic()
            try:
                with urlopen(self.urls[name], timeout=self.TIMEOUT) as answer:
                    answer.read()
                self.results[name].append(time.monotonic() - started)
            except OSError:
                self.results[name].append(None)

    def figures(self) -> dict[str, dict]:
        figures = {}
        for name, results in self.results.items():
            answered = sorted(seconds * 1000 for seconds in results if seconds is not None)
            figures[name] = {
                "sent": len(results),
                "failed": len(results) - len(answered),
                "p50_ms": answered[len(answered) // 2] if answered else float("nan"),
                "max_ms": answered[-1] if answered else float("nan"),
            }
        return figures


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


def say(text: str) -> None:
    print(text, flush=True)
