"""The life of a Sabito mapping: connecting a business to a tenant, renaming,
pausing, re-pointing and deleting it.

The API, the admin and the management commands call these functions and only
translate requests and answers; who may do what is `access`'s. `actor` is the user
acting, or None for the platform itself (a management command, a scheduled task).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import metadata
from ..engine.client import format_timestamp
from ..logs import LOG_PREFIX
from ..models import Customer, SabitoMapping, Tenant
from ..runs.queries import live_runs
from .access import Action, Actor, actor_name, ensure_may

logger = logging.getLogger("sabito_sync.mappings")


class BusinessAlreadyMapped(Exception):
    """The Sabito business is mapped to a tenant already (only operators get this
    far, so the message may say which)."""


class NoSuchTenant(Exception):
    pass


class SyncIsRunning(Exception):
    """The change must wait for the mapping's running sync to finish."""


def ensure_no_sync_running(*, mappings: Iterable[SabitoMapping], to: str) -> None:
    """Raise `SyncIsRunning` if any of `mappings` is syncing; `to` completes
    "… once it has finished, …" (what the caller wanted to do)."""
    running = list(
        SabitoMapping.objects.filter(pk__in=[mapping.pk for mapping in mappings], runs__in=live_runs())
        .distinct()
        .values_list("business_name", flat=True)
    )
    if running:
        names = ", ".join(sorted(running))
        raise SyncIsRunning(f"A sync of {names} is running; {to} once it has finished.")


# --- Connecting, changing and deleting -------------------------------------------------


def create_mapping(
    *,
    actor: Actor,
    tenant: Tenant,
    sabito_business_id: str,
    business_name: str,
    is_active: bool = True,
) -> SabitoMapping:
    """Connect a Sabito business to a tenant: a platform operator's act."""
    ensure_may(actor, Action.CONNECT, tenant=tenant)
    try:
        with transaction.atomic():
            mapping = SabitoMapping.objects.create(
                tenant=tenant,
                sabito_business_id=sabito_business_id,
                business_name=business_name,
                is_active=is_active,
            )
    except IntegrityError:
        raise already_mapped(sabito_business_id) from None
    logger.info(
        "%s Mapping created: business %s (%s) → tenant %s, by %s",
        LOG_PREFIX,
        business_name,
        sabito_business_id,
        tenant,
        actor_name(actor),
    )
    return mapping


def update_mapping(
    *,
    actor: Actor,
    mapping: SabitoMapping,
    business_name: str | None = None,
    is_active: bool | None = None,
    sabito_business_id: str | None = None,
    tenant_id: uuid.UUID | None = None,
) -> SabitoMapping:
    """Change what is given (None: unchanged). Any update, even one that changes
    nothing, needs MANAGE in the mapping's tenant. Renaming and pausing are the tenant's;
    re-pointing the mapping at another business or tenant is an operator's, waits for
    a running sync, and resets the watermark so the next sync fetches everything."""
    changes: dict[str, object] = {}
    if business_name is not None and business_name != mapping.business_name:
        changes["business_name"] = business_name
    if is_active is not None and is_active != mapping.is_active:
        changes["is_active"] = is_active
    # Model field name -> new value (a string, a UUID, then the tenant itself).
    repoint: dict[str, Any] = {}
    if sabito_business_id is not None and sabito_business_id != mapping.sabito_business_id:
        repoint["sabito_business_id"] = sabito_business_id
    if tenant_id is not None and tenant_id != mapping.tenant_id:
        repoint["tenant_id"] = tenant_id

    # Whatever the body says, even nothing: who may not manage the mapping learns
    # nothing of it here (an empty or unchanged PATCH answers the whole mapping).
    ensure_may(actor, Action.MANAGE, tenant=mapping.tenant)
    if repoint:
        # Before the tenant is looked up: whether a tenant exists is no business
        # of whoever may not move mappings.
        ensure_may(actor, Action.REPOINT, tenant=mapping.tenant)
        if "tenant_id" in repoint:
            repoint["tenant"] = Tenant.objects.filter(pk=repoint.pop("tenant_id")).first()
            if repoint["tenant"] is None:
                raise NoSuchTenant(f"There is no tenant {tenant_id}.")
    if not (changes or repoint):
        return mapping

    if not repoint:
        for name, value in changes.items():
            setattr(mapping, name, value)
        # Never `metadata`: a sync finishing meanwhile writes it, and must not be undone.
        mapping.save(update_fields=[*changes, "updated_at"])
        return mapping
    return repoint_mapping(actor=actor, mapping=mapping, changes=changes | repoint)


def repoint_mapping(*, actor: Actor, mapping: SabitoMapping, changes: dict[str, Any]) -> SabitoMapping:
    try:
        with transaction.atomic():
            # Locked like a finishing run locks it, so no run can record an outcome
            # (and a watermark for the old business) in between.
            locked = SabitoMapping.objects.select_for_update().select_related("tenant").get(pk=mapping.pk)
            ensure_no_sync_running(mappings=[locked], to="change its Sabito business or tenant")
            old_business, old_tenant = locked.sabito_business_id, locked.tenant
            for name, value in changes.items():
                setattr(locked, name, value)
            now = timezone.now()
            reason = (
                f"Re-pointed from business {old_business!r} in tenant {old_tenant} to business "
                f"{locked.sabito_business_id!r} in tenant {locked.tenant} by {actor_name(actor)} at "
                f"{format_timestamp(now)}: the watermark was reset, so this sync fetches every customer."
            )
            # The next run copies the reason into its note (the history says why it
            # fetched everything); its success clears it.
            locked.metadata = metadata.with_watermark_reset(locked.metadata, reason=reason, at=format_timestamp(now))
            locked.save(update_fields=[*changes, "metadata", "updated_at"])
            # The old business's missing-marks were judged against a feed this mapping
            # no longer reads: clear them rather than leave them for good.
            Customer.objects.filter(
                tenant=old_tenant, sabito_business_id=old_business, sabito_missing_since__isnull=False
            ).update(sabito_missing_since=None, updated_at=now)
    except IntegrityError:
        raise already_mapped(changes["sabito_business_id"]) from None
    logger.info("%s Mapping %s: %s", LOG_PREFIX, locked.pk, reason)
    return locked


def set_mapping_active(*, actor: Actor, mapping: SabitoMapping, active: bool) -> SabitoMapping:
    """Pause (False) or resume (True): a paused mapping is left out of scheduled and
    sync-all runs, and can still be synced by name."""
    return update_mapping(actor=actor, mapping=mapping, is_active=active)


def delete_mapping(*, actor: Actor, mapping: SabitoMapping) -> None:
    """Delete a mapping and its run history. Its customers stay: they are the
    tenant's records now. Refused while it syncs."""
    ensure_may(actor, Action.DELETE, tenant=mapping.tenant)
    with transaction.atomic():
        ensure_no_sync_running(
            mappings=[mapping], to="delete the mapping (pause it meanwhile to keep it out of scheduled syncs)"
        )
        mapping.delete()
    logger.info("%s Mapping deleted: %s, by %s", LOG_PREFIX, mapping, actor_name(actor))


def already_mapped(sabito_business_id: str) -> BusinessAlreadyMapped:
    holder = SabitoMapping.objects.select_related("tenant").filter(sabito_business_id=sabito_business_id).first()
    where = f" to tenant {holder.tenant} (mapping {holder.pk})" if holder else ""
    return BusinessAlreadyMapped(
        f"Sabito business {sabito_business_id!r} is already mapped{where}; a business maps to one tenant only."
    )
