"""Which sync a log line belongs to: the mapping, business, tenant and run ids, added
to every record logged while a sync runs, from a context variable
(docs/architecture.md, "Which sync a log line belongs to"). No Django imports:
logging is configured before the apps are loaded."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

CONTEXT_FIELDS = ("mapping_id", "business_id", "tenant_id", "run_id")

_sync_context: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar(
    "sabito_sync_log_context", default=None
)

P = ParamSpec("P")
R = TypeVar("R")


def sync_log_context(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function taking a keyword-only `mapping`: while it runs, every log
    line carries that mapping's ids (and the run's, once `bind` gives it). Inside a
    `task_log_context` it fills the task's context instead, so that the task's own
    lines after the sync (a retry) carry the ids as well."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        mapping: Any = kwargs["mapping"]  # a SabitoMapping (no Django imports here)
        ids = {
            "mapping_id": str(mapping.pk),
            "business_id": mapping.sabito_business_id,
            "tenant_id": str(mapping.tenant_id),
            "run_id": None,
        }
        context = _sync_context.get()
        if context is not None:
            context.update(ids)
            return function(*args, **kwargs)
        token = _sync_context.set(ids)
        try:
            return function(*args, **kwargs)
        finally:
            _sync_context.reset(token)

    return wrapper


def task_log_context(function):
    """Decorate a bound Celery task whose first argument is a mapping id: its lines
    carry that id from the start, and the sync's ids once the sync has run."""

    @functools.wraps(function)
    def wrapper(task, mapping_id, *args, **kwargs):
        token = _sync_context.set(dict.fromkeys(CONTEXT_FIELDS) | {"mapping_id": str(mapping_id)})
        try:
            return function(task, mapping_id, *args, **kwargs)
        finally:
            _sync_context.reset(token)

    return wrapper


@contextlib.contextmanager
def mapping_log_context(mapping_id: object) -> Iterator[None]:
    """Inside a task syncing several mappings in turn: while the block runs, its lines
    (and the sync's, once it has run) carry this mapping's ids and no other's."""
    token = _sync_context.set(dict.fromkeys(CONTEXT_FIELDS) | {"mapping_id": str(mapping_id)})
    try:
        yield
    finally:
        _sync_context.reset(token)


def bind(**values: object) -> None:
    """Add ids to the current sync's context (e.g. `run_id` once the run is inserted);
    outside a sync this does nothing."""
    context = _sync_context.get()
    if context is not None:
        context.update({key: None if value is None else str(value) for key, value in values.items()})


def current() -> dict[str, str | None]:
    return dict(_sync_context.get() or {})


class SyncContextFilter(logging.Filter):
    """Sets the sync's ids on each record logged inside a sync; records outside one
    are left alone (the JSON formatter then prints no such fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _sync_context.get()
        if context is not None:
            for key in CONTEXT_FIELDS:
                if not hasattr(record, key):
                    setattr(record, key, context.get(key))
        return True
