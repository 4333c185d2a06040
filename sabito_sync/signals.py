"""Signals for the host CRM, sent by the sync engine: `sync_finished` once a started
run is recorded, `customers_synced` after each batch of pages commits (docs/operations.md,
"Alerts, and signals for the host CRM", lists their arguments). A receiver that raises
is logged and never fails the sync; connect yours in your `AppConfig.ready()`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import transaction
from django.dispatch import Signal

from .logs import LOG_PREFIX

logger = logging.getLogger("sabito_sync.signals")

sync_finished = Signal()
customers_synced = Signal()


def run_finished(*, mapping, result) -> None:
    """Called by the engine once a run's outcome is recorded."""
    transaction.on_commit(lambda: send_robustly(sync_finished, sender=type(mapping), mapping=mapping, result=result))


def page_written(*, mapping, run_id, created_sabito_ids: Sequence[str], updated_ids: Sequence) -> None:
    """Called by the engine after each batch of pages. The batch's inserts return no
    ids, so the created customers are looked up by their Sabito ids, in one query, and
    only when someone listens: a sync nobody listens to keeps its statements per batch."""
    if not customers_synced.has_listeners():
        return

    def send() -> None:
        from .models import Customer

        created_ids = (
            list(
                Customer.objects.filter(
                    tenant_id=mapping.tenant_id, sabito_customer_id__in=list(created_sabito_ids)
                ).values_list("pk", flat=True)
            )
            if created_sabito_ids
            else []
        )
        send_robustly(
            customers_synced,
            sender=type(mapping),
            mapping=mapping,
            run_id=run_id,
            tenant_id=mapping.tenant_id,
            created_ids=created_ids,
            # The page's rows hold primary keys as the database returns them (hex on SQLite).
            updated_ids=[Customer._meta.pk.to_python(pk) for pk in updated_ids],
        )

    transaction.on_commit(send)


def send_robustly(signal: Signal, **kwargs) -> None:
    for receiver, outcome in signal.send_robust(**kwargs):
        if isinstance(outcome, Exception):
            logger.error(
                "%s Receiver %s of a sync signal failed: %s",
                LOG_PREFIX,
                getattr(receiver, "__qualname__", receiver),
                outcome,
                exc_info=outcome,
            )
