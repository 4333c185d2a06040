"""The benchmark's scenarios: what each one measures, and the measured work itself.

`runner.py` runs every scenario in a fresh process, `python benchmarks/scenarios.py NAME
PARAMS_JSON`, so the peak RSS it reports is that scenario's own and the simulator (served
by the parent) never shares an interpreter with the client it serves. The process prints
its figures as one line of JSON. Nothing here starts a server or touches another process.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

PAGE_SIZE = 100
# The naive baseline writes ~300 records/s: past this many records it is measured on
# the first ones only and its per-record cost extrapolated (and labelled so).
BASELINE_SAMPLE = 10_000
# Added to every Sabito response in the "over a network" scenario: a fast API nearby.
LINK_LATENCY_SECONDS = 0.02

# The two limits every sync is judged against: `fetch_limit` (the least any client can
# spend getting the records) and `copy_floor` (the least PostgreSQL can spend storing
# them). `limit` is the project's own client doing the fetching alone.
SCENARIOS = (
    ("fetch_limit", "fetch limit: http.client keep-alive + orjson, no validation, no database"),
    ("limit", "project client: fetch + parse, no database"),
    ("baseline", "naive baseline: lookup + save() per record"),
    ("full", "project: full sync, all new"),
    ("resync", "project: unchanged re-sync"),
    ("resync_from_memory", "project: unchanged re-sync, Sabito's pages from memory"),
    ("incremental", "project: incremental, 1% changed"),
    ("copy_floor", "database floor: one COPY, no lookups"),
    ("latency_limit", f"project client, {LINK_LATENCY_SECONDS * 1000:.0f} ms per Sabito response"),
    ("latency_full", f"project: full sync, {LINK_LATENCY_SECONDS * 1000:.0f} ms per Sabito response"),
)


def run(name: str, params: dict) -> int:
    import django

    django.setup()
    scenarios = {
        "simulator_alone": simulator_alone,
        "fetch_limit": child_fetch_limit,
        "limit": child_limit,
        "baseline": child_baseline,
        "sync": child_sync,
        "copy_floor": child_copy_floor,
        "nothing_new": child_nothing_new,
    }
    result = scenarios[name](params)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM), in MB.

    Not getrusage's ru_maxrss: Linux carries that over an exec from the process that
    spawned this one, here the runner holding the simulator's N records, so every
    scenario would report at least the runner's size and the growth from 10,000 to
    100,000 would be the simulator's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def simulator_alone(params: dict) -> dict:
    """Records per second the simulator serves to a raw keep-alive client that does
    not parse them: what the server alone can do."""
    import http.client
    from urllib.parse import urlsplit

    from sabito_sync.conf import load_sabito_settings

    settings = load_sabito_settings()
    parts = urlsplit(settings.api_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    started, records, offset = time.perf_counter(), 0, 0
    while True:
        connection.request(
            "GET",
            f"/api/customers?businessId={params['business_id']}&limit={PAGE_SIZE}&offset={offset}",
            headers={"X-API-Key": settings.api_key},
        )
        count = connection.getresponse().read().count(b'"sourceType"')
        records, offset = records + count, offset + PAGE_SIZE
        if count < PAGE_SIZE:
            break
    seconds = time.perf_counter() - started
    connection.close()
    return {"records": records, "seconds": seconds, "records_per_second": records / seconds}


def child_fetch_limit(params: dict) -> dict:
    """The fetch limit: every page through the plainest keep-alive client there is
    (http.client, one connection) and parsed by orjson; no validation, no retries,
    no database. What the project's client spends beyond it is its own overhead."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    import orjson

    from sabito_sync.conf import load_sabito_settings

    settings = load_sabito_settings()
    parts = urlsplit(settings.api_url)
    path = f"{parts.path.rstrip('/')}/api/customers"
    headers = {"X-API-Key": settings.api_key, "Accept": "application/json"}
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    records = pages = 0
    started, process_start = time.perf_counter(), time.process_time()
    while True:
        query = urlencode({"businessId": params["business_id"], "limit": PAGE_SIZE, "offset": records})
        connection.request("GET", f"{path}?{query}", headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"the simulator answered HTTP {response.status}: {body[:200]!r}")
        page = orjson.loads(body)["data"]
        records, pages = records + len(page), pages + 1
        if len(page) < PAGE_SIZE:
            break
    seconds, cpu = time.perf_counter() - started, time.process_time() - process_start
    connection.close()
    return {"seconds": seconds, "records": records, "pages": pages, "process_cpu_seconds": cpu}


def child_limit(params: dict) -> dict:
    """The project client: every page through the project's own client, parsed, and
    nothing else (no validation, no database)."""
    from sabito_sync.engine.sync import sabito_client

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

    from sabito_sync.engine.records import SYNCED_FIELDS, InvalidRecord, customer_values
    from sabito_sync.engine.sync import sabito_client
    from sabito_sync.models import Customer, Tenant

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


class MemoryFeed:
    """Stands in for the Sabito client with pages it fetched beforehand: the sync then
    costs what it costs beyond getting the pages (validating them included)."""

    def __init__(self, pages: list):
        self.pages = pages

    def iter_customer_pages(self, **_options):
        return iter(self.pages)

    def close(self) -> None:
        pass


def child_sync(params: dict) -> dict:
    """The project: `sync_mapping`, exactly as the task and the command call it; with
    `from_memory`, on pages fetched (and decoded) before the clock starts."""
    from sabito_sync.engine.prefetch import sync_feed
    from sabito_sync.engine.sync import sabito_client, sync_mapping
    from sabito_sync.models import SabitoMapping

    mapping = SabitoMapping.objects.select_related("tenant").get(pk=params["mapping_id"])
    client = None
    if params.get("from_memory"):
        with sabito_client() as fetching:
            client = MemoryFeed(list(sync_feed(fetching, business_id=mapping.sabito_business_id)))
    marks: list[int] = []
    with counted_queries() as queries, cpu_seconds() as cpu:
        started = time.perf_counter()
        result = sync_mapping(
            mapping=mapping,
            full_sync=params["full_sync"],
            client=client,
            on_page=lambda _result: marks.append(queries.count),
        )
        seconds = time.perf_counter() - started
    # The callback runs after each written batch of pages: between two consecutive
    # calls lie exactly one batch's statements; the first batch also carries the run's
    # start, the end the run's finish.
    per_batch = sorted({later - earlier for earlier, later in itertools.pairwise(marks)})
    return {
        "seconds": seconds,
        "success": result.success,
        "error": result.error,
        "records": result.processed,
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
        "batches": len(marks),
        "queries": queries.count,
        "queries_per_batch": per_batch,
        **cpu,
    }


def child_nothing_new(params: dict) -> dict:
    """Mappings whose incremental sync finds nothing new, one after the other: the
    statements and milliseconds of each sync in-process, then each mapping's share of
    the fan-out's chunk task, its body run here (no broker; the tick measures that)."""
    import statistics

    from sabito_sync.conf import load_sabito_settings
    from sabito_sync.engine.sync import sync_mapping
    from sabito_sync.models import SabitoMapping
    from sabito_sync.tasks import sync_mapping_chunk_task

    mapping_ids = params["mapping_ids"]
    mappings = list(SabitoMapping.objects.select_related("tenant").filter(pk__in=mapping_ids))
    sync_mapping(mapping=mappings[0])  # the connections opened, the caches filled
    seconds, statements = [], []
    for mapping in mappings[1:]:
        with counted_queries() as queries:
            started = time.perf_counter()
            result = sync_mapping(mapping=mapping)
            seconds.append(time.perf_counter() - started)
        statements.append(queries.count)
        if not (result.success and result.processed == 0):
            raise RuntimeError(f"a sync with nothing new did not succeed with nothing: {result}")
    chunk_size = load_sabito_settings().fanout_chunk_size
    # The trigger keeps these runs apart from the tick's ("beat").
    with counted_queries() as queries:
        started = time.perf_counter()
        for start in range(0, len(mapping_ids), chunk_size):
            sync_mapping_chunk_task.apply(args=[mapping_ids[start : start + chunk_size], False, "cli"]).get()
        chunk_seconds = time.perf_counter() - started
    return {
        "mappings": len(mapping_ids),
        "statements_per_mapping": statistics.median(statements),
        "in_process_ms": statistics.median(seconds) * 1000,
        "in_process_ms_mean": statistics.mean(seconds) * 1000,
        "chunk_size": chunk_size,
        "chunk_task_ms_per_mapping": chunk_seconds / len(mapping_ids) * 1000,
        "chunk_statements_per_mapping": queries.count / len(mapping_ids),
    }


def child_copy_floor(params: dict) -> dict:
    """The least PostgreSQL can do to store the N customers: the records fetched and
    validated beforehand, then one COPY in one transaction, no lookups at all. Not a
    way to sync (no matching, no counters); the floor under any way to sync."""
    import uuid

    from django.db import connection, transaction
    from django.utils import timezone

    from sabito_sync.engine.prefetch import sync_feed
    from sabito_sync.engine.records import WRITTEN_FIELDS, validate_records, written_values
    from sabito_sync.engine.sync import sabito_client
    from sabito_sync.models import Customer, Tenant

    # The rows as the sync writes them, each with its record's fingerprint.
    business_id = params["business_id"]
    with sabito_client() as client:
        rows = [
            written_values(values)
            for page in sync_feed(client, business_id=business_id)
            for values in validate_records(page.records, business_id=business_id, fingerprints=page.fingerprints)
        ]
    name = f"{params['size']}-{params.get('round', 1)}"
    tenant = Tenant.objects.create(name=f"COPY floor {name}", slug=f"copy-floor-{name}")
    meta = Customer._meta
    names = ("id", "tenant", *WRITTEN_FIELDS, "created_at", "updated_at")
    columns = ", ".join(meta.get_field(name).column for name in names)
    now = timezone.now()
    with cpu_seconds() as cpu:
        started = time.perf_counter()
        with (
            transaction.atomic(),
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {meta.db_table} ({columns}) FROM STDIN") as copy,
        ):
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


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], json.loads(sys.argv[2])))
