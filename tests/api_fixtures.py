"""Fixtures for the REST API tests: callers with a token, a role and a tenant header.

Import the fixtures a test module uses by name (`from tests.api_fixtures import caller, ...`)
so pytest finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import caches
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from sabito_sync.models import Membership, SyncRun, Tenant

from .factories import MembershipFactory, TenantFactory, UserFactory

# A real Redis client pointed at a port where nothing listens: the cache server is down.
UNREACHABLE_CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"socket_connect_timeout": 1},
    }
}

SYNC_ALL = "/api/sabito/sync"
STATUS = "/api/sabito/sync/status"
MAPPINGS = "/api/sabito/mappings"


def sync_one_url(mapping) -> str:
    return f"/api/sabito/sync/{mapping if isinstance(mapping, str) else mapping.pk}"


def mapping_url(mapping) -> str:
    return f"/api/sabito/mappings/{mapping if isinstance(mapping, str) else mapping.pk}"


def runs_url(mapping) -> str:
    return f"{mapping_url(mapping)}/runs"


def run_url(run) -> str:
    return f"/api/sabito/runs/{run if isinstance(run, str) else run.pk}"


@dataclass
class Caller:
    """A user with a Bearer token, acting for one tenant through X-Tenant-ID."""

    user: object
    token: Token
    tenant: Tenant | None
    client: APIClient

    def acting_for(self, tenant: Tenant | str | None) -> Caller:
        self.tenant = tenant
        credentials = {"HTTP_AUTHORIZATION": f"Bearer {self.token.key}"}
        if tenant is not None:
            credentials["HTTP_X_TENANT_ID"] = str(tenant.pk if isinstance(tenant, Tenant) else tenant)
        self.client.credentials(**credentials)
        return self

    def get(self, path, query=None, **extra):
        return self.client.get(path, query, **extra)

    def post(self, path, body=None, **extra):
        if body is None:
            return self.client.post(path, **extra)
        return self.client.post(path, body, format="json", **extra)

    def patch(self, path, body, **extra):
        return self.client.patch(path, body, format="json", **extra)

    def delete(self, path, **extra):
        return self.client.delete(path, **extra)


OPERATOR_PERMISSIONS = ("view_sabitomapping", "add_sabitomapping", "change_sabitomapping", "delete_sabitomapping")


def grant(user, *codenames: str) -> None:
    """Give `user` these sabito_sync permissions (and forget its cached ones)."""
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="sabito_sync", codename__in=codenames))
    for cache in ("_perm_cache", "_user_perm_cache"):
        user.__dict__.pop(cache, None)


@pytest.fixture
def make_caller(db):
    """`make_caller(tenant, role="admin"|"member"|None, staff=False, permissions=())`: a
    new user with a token, a membership of `tenant` in `role` (None: no membership) and
    the given sabito_sync model permissions, acting for `tenant`."""

    def make(tenant=None, *, role=Membership.Role.ADMIN, staff=False, permissions=(), **user_fields) -> Caller:
        tenant = tenant or TenantFactory()
        # No password: API callers use tokens, and hashing one costs ~0.3 s per user.
        user = UserFactory(is_staff=staff, password=None, **user_fields)
        if role is not None:
            MembershipFactory(user=user, tenant=tenant, role=role)
        grant(user, *permissions)
        token = Token.objects.create(user=user)
        return Caller(user=user, token=token, tenant=None, client=APIClient()).acting_for(tenant)

    return make


@pytest.fixture
def operator(make_caller, tenant) -> Caller:
    """A platform operator: every sabito_sync mapping permission, no membership, not staff."""
    return make_caller(tenant, role=None, permissions=OPERATOR_PERMISSIONS)


@pytest.fixture
def tenant(db):
    return TenantFactory(name="My Tenant")


@pytest.fixture
def admin(make_caller, tenant) -> Caller:
    return make_caller(tenant, role=Membership.Role.ADMIN)


@pytest.fixture
def member(make_caller, tenant) -> Caller:
    return make_caller(tenant, role=Membership.Role.MEMBER)


@pytest.fixture(autouse=True)
def fresh_throttle_history():
    """Throttle counts live in the default cache, keyed by user id; ids repeat from
    test to test, so each test starts with none."""
    clear_this_runs_cache()
    yield
    clear_this_runs_cache()


def clear_this_runs_cache() -> None:
    """The cache's entries of this test run: its folder, or its keys in Redis (never
    the whole Redis database, which another run and the broker may share)."""
    from django.core.cache.backends.redis import RedisCache

    from sabito_sync.api.permissions import redis_client

    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        cache.clear()
        return
    client = redis_client()
    keys = list(client.scan_iter(match=f"{cache.key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def inline_worker(monkeypatch, settings, django_capture_on_commit_callbacks):
    """A worker in this process that runs each sync the moment it is queued.

    The sync endpoints queue runs and wait for a worker; a unit test runs inside a
    transaction that never commits, so `transaction.on_commit` would never send the
    task. Here it is sent at once and `apply` runs the real task in this process (the
    run claimed, synced and recorded), so the endpoint finds it finished. The
    end-to-end tests use a real worker over the real broker instead."""
    from sabito_sync import tasks
    from sabito_sync.services import queueing

    queue = queueing.enqueue_mapping_sync

    def queue_and_run(**kwargs) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            return queue(**kwargs)

    def run_here(*, args, kwargs, task_id):
        return tasks.sync_mapping_task.apply(args=args, kwargs=kwargs, task_id=task_id, throw=True)

    monkeypatch.setattr(queueing, "enqueue_mapping_sync", queue_and_run)
    monkeypatch.setattr(tasks.sync_mapping_task, "apply_async", run_here)
    # A task retry is a run of its own, which `apply` would run at once, ignoring the
    # countdown; the endpoint answers for the run it queued.
    settings.SABITO_TASK_MAX_RETRIES = "0"


def queued_run(mapping, **fields) -> SyncRun:
    """A run queued from the admin, waiting for a worker (none runs in a unit test)."""
    now = timezone.now()
    return SyncRun.objects.create(
        mapping=mapping,
        trigger=fields.pop("trigger", SyncRun.Trigger.ADMIN),
        status=SyncRun.Status.QUEUED,
        started_at=now,
        heartbeat_at=now,
        **fields,
    )


def running_run(mapping, **fields) -> SyncRun:
    """A run that holds the mapping's lock right now (fresh heartbeat)."""
    now = timezone.now()
    return SyncRun.objects.create(
        mapping=mapping,
        trigger=SyncRun.Trigger.BEAT,
        status=SyncRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        **fields,
    )


def finished_run(mapping) -> SyncRun:
    """A successful scheduled run of the mapping, in the past."""
    started = timezone.now() - timedelta(hours=6)
    return SyncRun.objects.create(
        mapping=mapping,
        trigger=SyncRun.Trigger.BEAT,
        status=SyncRun.Status.SUCCEEDED,
        started_at=started,
        heartbeat_at=started,
        finished_at=started + timedelta(seconds=2),
    )


def error_body(response) -> dict:
    """The JSON error body, after checking it has the API's error shape."""
    body = response.json()
    assert set(body) == {"success", "message", "errors"}, body
    assert body["success"] is False
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], dict)
    return body
