"""Who may call the API, for which tenant, and how often.

Authentication is DRF's token scheme with the `Bearer` keyword. The tenant is
resolved here, in a DRF permission, and not in middleware: DRF authenticates the
request only after every middleware has run, so middleware cannot know the user.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.cache import BaseCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from ..conf import sync_throttle_rate
from ..models import Membership, Tenant
from ..services import access

logger = logging.getLogger("sabito_sync.permissions")

TENANT_HEADER = "X-Tenant-ID"


class TenantRequest(Request):
    """A request `TenantPermission` has let in, as the views see it: for annotations
    only (DRF's `Request` does not know the attributes the permission sets)."""

    tenant: Tenant
    # The caller's role in the tenant; None for an operator without a membership.
    tenant_role: str | None


class BearerTokenAuthentication(TokenAuthentication):
    """`Authorization: Bearer <token>` with DRF's per-user tokens
    (`manage.py drf_create_token <username>`)."""

    keyword = "Bearer"

    def authenticate(self, request):
        # DRF ignores a header with another scheme and then says no credentials were
        # sent, which misleads whoever sent `Token …` or `Basic …`.
        scheme = get_authorization_header(request).split()[:1]
        if scheme and scheme[0].lower() != self.keyword.lower().encode():
            raise AuthenticationFailed(
                f"Unsupported authorization scheme {scheme[0].decode(errors='replace')[:20]!r}: "
                "send Authorization: Bearer <token>."
            )
        return super().authenticate(request)


class TenantPermission(BasePermission):
    """Resolves the tenant named in `X-Tenant-ID`, lets in its members and platform
    operators (`access.is_platform_operator`), and sets `request.tenant` and
    `request.tenant_role` (None for an operator without a membership); every view
    scopes its querysets by `request.tenant`. What the caller may do there is
    `ActionPermission`'s to decide."""

    def has_permission(self, request, view) -> bool:
        tenant_id = tenant_id_from_header(request)
        user = request.user
        membership = Membership.objects.select_related("tenant").filter(user=user, tenant_id=tenant_id).first()
        tenant: Tenant | None
        role: str | None
        if membership is not None:
            tenant, role = membership.tenant, membership.role
        elif access.is_platform_operator(user):
            tenant, role = Tenant.objects.filter(pk=tenant_id).first(), None
            if tenant is None:
                raise PermissionDenied(f"There is no tenant {tenant_id}.")
        else:
            # The same answer for "no such tenant" and "not yours": tenant ids are not probeable.
            raise PermissionDenied(f"You are not a member of tenant {tenant_id}.")
        request.tenant = tenant
        request.tenant_role = role
        return True


class ActionPermission(BasePermission):
    """After `TenantPermission`: the caller may do the view's `actions[method]`
    (an `access.Action`) in the tenant, or gets a 403 that says who may. Checked
    before the body is read, so a refused request changes nothing and learns nothing."""

    def has_permission(self, request, view) -> bool:
        action = view.actions_by_method.get(request.method)
        if action is not None and not access.may(request.user, action, tenant=request.tenant, role=request.tenant_role):
            raise PermissionDenied(action.value.refusal)
        return True


def tenant_id_from_header(request) -> uuid.UUID:
    raw = request.headers.get(TENANT_HEADER, "").strip()
    if not raw:
        message = f"The {TENANT_HEADER} header is required: send the id (a UUID) of the tenant you act for."
        raise ValidationError({TENANT_HEADER: [message]})
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError({TENANT_HEADER: [f"{raw[:100]!r} is not a valid tenant id; expected a UUID."]}) from None


class SyncTriggerThrottle(ScopedRateThrottle):
    """Per-user rate limit on the endpoints that start syncs (scope `sabito_sync`,
    rate `SABITO_SYNC_THROTTLE`, default 30/minute; empty: no limit).

    The rate is the app's own setting, not DRF's `DEFAULT_THROTTLE_RATES`, so a host
    project needs no REST_FRAMEWORK entry for it. Read when each request arrives, so a
    changed setting (an override in a test) takes effect."""

    def get_rate(self):
        return sync_throttle_rate()

    def allow_request(self, request, view) -> bool:
        # The counters live in the cache. With the cache server down, refusing every
        # sync would turn a protective limit into an outage; the run lock still
        # keeps one run per mapping, so let the request through and say so.
        try:
            key = self.get_cache_key(request, view) if self.get_rate() else None
            if key is None:
                return super().allow_request(request, view)
            # DRF reads a user's history, decides, and writes it back: two processes
            # doing that at once both let a request in (31 through a limit of 30).
            with counted_alone(self.cache, key):
                return super().allow_request(request, view)
        except Exception:
            logger.warning("Sync trigger throttle skipped: the cache is unavailable", exc_info=True)
            return True


_redis_clients: dict[str, Any] = {}
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_lock = threading.Lock()
LOCK_SECONDS = 5  # held for a cache read and write; a holder that died frees it after this


@contextmanager
def counted_alone(cache: BaseCache, key: str) -> Iterator[None]:
    """Hold `key`'s counter for one process and thread at a time, with a lock that is
    as wide as the cache is shared: a Redis lock (every web process of every host),
    a file lock in the cache's folder (every process of the host), or a thread lock
    (a cache of this process only)."""
    name = cache.make_key(f"{key}:lock")
    if isinstance(cache, RedisCache):
        with redis_client().lock(name, timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS):
            yield
    elif isinstance(cache, FileBasedCache):
        folder = default_cache_settings()["LOCATION"]
        path = os.path.join(folder, hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock")
        with open(path, "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
    else:
        with _thread_locks_lock:
            lock = _thread_locks.setdefault(name, threading.Lock())
        with lock:
            yield


def default_cache_settings() -> dict[str, Any]:
    """The settings of DRF's throttle cache, the default one."""
    from django.conf import settings
    from django.core.cache import DEFAULT_CACHE_ALIAS

    return dict(settings.CACHES[DEFAULT_CACHE_ALIAS])


def redis_client() -> Any:
    """A redis-py client of the default cache's (first, written-to) server, one per process."""
    import re

    import redis

    configured = default_cache_settings()
    servers = configured["LOCATION"]
    location = re.split("[;,]", servers)[0] if isinstance(servers, str) else servers[0]
    client = _redis_clients.get(location)
    if client is None:
        options = {name: value for name, value in configured.get("OPTIONS", {}).items() if name.startswith("socket_")}
        client = _redis_clients[location] = redis.Redis.from_url(location, **options)
    return client
