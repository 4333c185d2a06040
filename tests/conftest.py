import json
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

SABITO_TEST_URL = "https://sabito.test"
SABITO_TEST_KEY = "test-key-5f0c2a"


@contextmanager
def plans_of_statements(starting_with: str):
    """The EXPLAIN output of every statement run in the block whose SQL starts with
    `starting_with` (the EXPLAIN itself does not), one text each."""
    from django.db import connection

    plans: list[str] = []

    def explain(execute, sql, params, many, context):
        if sql.lstrip().startswith(starting_with):
            context["cursor"].execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in context["cursor"].fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield plans


@pytest.fixture(autouse=True, scope="session")
def own_celery_queue():
    """This run's own Celery queue, for its in-process workers and, through the
    environment, every worker or beat process it starts: two runs sharing one broker
    (two developers, or a developer and CI on one Redis) never take each other's tasks."""
    import os
    import uuid

    from celery import current_app as app

    queue = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.environ["CELERY_QUEUE"] = queue
    app.conf.task_default_queue = queue
    return queue


@pytest.fixture(autouse=True, scope="session")
def own_cache_folder(tmp_path_factory):
    """Without Redis the cache is a folder shared by a host's processes: this run's
    own, for itself and every process it starts, so runs never count each other's
    requests (nor clear each other's counters). With Redis, this run's own key prefix."""
    import os

    from django.conf import settings
    from django.test.utils import override_settings

    if settings.CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
        folder = str(tmp_path_factory.mktemp("cache"))
        os.environ["CACHE_DIR"] = folder
        override = override_settings(CACHES={"default": {**settings.CACHES["default"], "LOCATION": folder}})
        override.enable()
        yield folder
        override.disable()
    else:
        # Redis: this run's own key prefix, for itself and the processes it starts.
        import uuid

        prefix = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.environ["CACHE_KEY_PREFIX"] = prefix
        override = override_settings(CACHES={"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}})
        override.enable()
        yield prefix
        override.disable()


@pytest.fixture(autouse=True)
def sabito_test_settings(settings):
    """Point the sync at a fake Sabito, make retries immediate, answer sync requests
    without waiting, and hash test passwords cheaply (the default hasher costs ~0.3 s
    per login)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.SABITO_API_URL = SABITO_TEST_URL
    settings.SABITO_API_KEY = SABITO_TEST_KEY
    settings.SABITO_MAX_RETRIES = "2"
    settings.SABITO_RETRY_BACKOFF = "0"
    settings.SABITO_SYNC_OVERLAP = "300"
    # A sync in a test transaction must not have its heartbeat thread (another
    # database connection) look for a row it cannot see: no beat within a unit test.
    settings.SABITO_HEARTBEAT_SECONDS = "10"
    # The sync endpoints answer at once: no worker runs in a unit test (they use
    # `inline_worker`); the end-to-end tests set the wait they need.
    settings.SABITO_SYNC_API_WAIT = "0"
    return settings


class FakeSabito:
    """Sabito's `GET /api/customers` over `responses`: pages a list of records per
    business by limit/offset, optionally capping the page size, and remembers
    every request's query so tests can assert what was asked."""

    def __init__(self, mock: responses.RequestsMock):
        self.records: dict[str, list] = {}
        self.requests: list[dict] = []
        self.page_cap: int | None = None
        # (status, body) answers served before any page, one per request.
        self.queued_answers: list[tuple[int, str]] = []
        # offset → body served instead of the page at that offset.
        self.bodies_at_offset: dict[int, str] = {}
        # While set, every request whose window reaches past this offset answers 503:
        # Sabito going down part way through a feed (None: it is up).
        self.down_from_offset: int | None = None
        self.mock = mock
        mock.add_callback(responses.GET, f"{SABITO_TEST_URL}/api/customers", callback=self.serve)

    def answer_next(self, status: int, body: str = '{"error": "boom"}', *, times: int = 1) -> None:
        self.queued_answers.extend([(status, body)] * times)

    def serve(self, request):
        query = {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}
        self.requests.append(query | {"X-API-Key": request.headers.get("X-API-Key")})
        if self.queued_answers:
            status, body = self.queued_answers.pop(0)
            return status, {"Content-Type": "application/json"}, body
        limit = int(query.get("limit", 100))
        if self.down_from_offset is not None and int(query.get("offset", 0)) + limit > self.down_from_offset:
            return 503, {"Content-Type": "application/json"}, '{"error": "down"}'
        if self.page_cap:
            limit = min(limit, self.page_cap)
        offset = int(query.get("offset", 0))
        if offset in self.bodies_at_offset:
            return 200, {"Content-Type": "application/json"}, self.bodies_at_offset[offset]
        page = self.records.get(query["businessId"], [])[offset : offset + limit]
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": page})


def mapping_fed_in_small_batches(fake_sabito, settings, *, business_id: str, records: int):
    """A mapping whose Sabito feed is `records` usual records, synced in pages of 10
    and batches of 50: a sync of a few hundred records runs through several batches."""
    from .factories import SabitoMappingFactory, sabito_record

    settings.SABITO_PAGE_SIZE = "10"
    settings.SABITO_WRITE_BATCH_RECORDS = "50"
    fake_sabito.records[business_id] = [sabito_record(n) for n in range(records)]
    return SabitoMappingFactory(sabito_business_id=business_id)


def full_sync(mapping):
    """A full sync of `mapping`, which must succeed; its result."""
    from sabito_sync.engine.sync import sync_mapping

    result = sync_mapping(mapping=mapping, full_sync=True)
    assert result.success, result.error
    return result


@pytest.fixture
def fake_sabito():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeSabito(mock)


# --- Real servers and workers for end-to-end tests -------------------------------------

SIMULATOR_KEY = "sim-key"


@pytest.fixture
def sabito_simulator(settings):
    """The project's Sabito simulator over real HTTP, with the sync pointed at it."""
    from sabito_simulator import serving

    with serving(customers_per_business=60, businesses=2, seed=7, api_key=SIMULATOR_KEY) as simulator:
        settings.SABITO_API_URL = simulator.url
        settings.SABITO_API_KEY = SIMULATOR_KEY
        yield simulator


def pytest_configure(config):
    """Give the test run its own broker: a fresh folder for the filesystem
    transport (never the folder of a stack running on this machine), or a
    purged Redis database when REDIS_URL is set."""
    import tempfile

    from celery import current_app as app
    from django.conf import settings

    if app.conf.broker_url.startswith("filesystem://"):
        folder = tempfile.mkdtemp(prefix="nexpro-test-broker-")
        options = {
            "data_folder_in": f"{folder}/queue",
            "data_folder_out": f"{folder}/queue",
            "control_folder": f"{folder}/control",
            "store_processed": False,
        }
        for key in ("data_folder_in", "control_folder"):
            __import__("os").makedirs(options[key], exist_ok=True)
        app.conf.broker_transport_options = options
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
        settings.CELERY_BROKER_FOLDER = folder


@contextmanager
def celery_worker(*, purge: bool = True):
    """A real Celery worker (two threads) in this process, consuming this run's queue
    on the real broker: the filesystem transport by default, Redis when REDIS_URL is
    set. Tasks are serialised to JSON and travel through the broker as in production.
    `purge` first drops what earlier tests left in the queue."""
    from celery import current_app as app
    from celery.contrib.testing.worker import start_worker

    if purge:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(app.conf.task_default_queue)
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
    ) as worker:
        try:
            yield worker
        finally:
            stop_tasks_in_flight()


def stop_tasks_in_flight() -> None:
    """Ask the runs a test left running to stop, and wait until the worker's threads
    are idle. The thread pool's shutdown does not wait for its tasks, and a sync still
    writing while the test database is flushed deadlocks the flush."""
    from celery.worker import state
    from django.utils import timezone

    from sabito_sync.models import SyncRun

    SyncRun.objects.filter(status=SyncRun.Status.RUNNING, cancel_requested_at__isnull=True).update(
        cancel_requested_at=timezone.now()
    )
    wait_for(lambda: not state.active_requests, timeout=120, message="the worker's tasks to stop")


@pytest.fixture
def celery_worker_thread(transactional_db):
    """`celery_worker()` for the whole test."""
    with celery_worker() as worker:
        yield worker


def wait_for(condition, *, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    """Poll until `condition()` is truthy; fail the test after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {message}")


def subprocess_env(**overrides) -> dict:
    """Environment for a worker/beat/server subprocess that shares this test run's
    database, broker and Sabito settings."""
    import os

    from django.conf import settings
    from django.db import connection

    database = connection.settings_dict
    if database["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{database['NAME']}"
    else:
        host = database.get("HOST") or "127.0.0.1"
        port = database.get("PORT") or 5432
        user = database.get("USER") or "postgres"
        password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
        database_url = f"postgres://{user}{password}@{host}:{port}/{database['NAME']}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SABITO_", "PYTEST"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_BROKER_FOLDER": str(settings.CELERY_BROKER_FOLDER),
            "SABITO_API_URL": settings.SABITO_API_URL,
            "SABITO_API_KEY": settings.SABITO_API_KEY,
            "SABITO_RETRY_BACKOFF": str(settings.SABITO_RETRY_BACKOFF),
            "SABITO_MAX_RETRIES": str(settings.SABITO_MAX_RETRIES),
            "SABITO_PAGE_SIZE": str(settings.SABITO_PAGE_SIZE),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@contextmanager
def beat_process(folder, **env_overrides):
    """A real `celery beat` process on this test run's database and broker (see
    `subprocess_env`), stopped when the block ends; yields the path of its log.

    Its periodic sync is off unless the test turns it on: a cron that comes due
    while the test runs (`0 */6 * * *` at noon) would sync mappings behind its back."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    log_path = Path(folder) / "beat.log"
    with open(log_path, "w") as log:
        beat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "nexpro",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(Path(folder) / "beat-schedule"),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=subprocess_env(**{"SABITO_SYNC_ENABLED": "false", **env_overrides}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield log_path
        finally:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(timeout=20)
