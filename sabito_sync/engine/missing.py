"""After a complete full sync: the tenant's customers linked to the business that
Sabito no longer returned, marked missing (never deleted)."""

from __future__ import annotations

import logging

from django.utils import timezone

from ..logs import LOG_PREFIX
from ..models import SabitoMapping
from . import batch_sql

logger = logging.getLogger("sabito_sync.sync")


def mark_missing_customers(*, mapping: SabitoMapping, returned_ids: set[str]) -> int:
    """After a complete, successful full sync: flag the mapping's linked customers
    that Sabito no longer returned. Only such a run can tell (the incremental feed
    never shows deletions), and the customers are kept: a CRM record may carry
    history that matters more than Sabito's deletion."""
    marked = batch_sql.mark_missing(
        tenant_id=mapping.tenant_id, business_id=mapping.sabito_business_id, seen_ids=returned_ids, now=timezone.now()
    )
    if marked:
        logger.info(
            "%s %d customers of %s are no longer in Sabito; marked missing", LOG_PREFIX, marked, mapping.business_name
        )
    return marked
