"""How the admin pages show times, durations, counters and a run's state."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from .. import metadata
from ..models import SabitoMapping, SyncRun
from ..runs.queries import active_runs

ADMIN_CSS = {"all": ["sabito_sync/admin.css"]}
ADMIN_JS = ["sabito_sync/run_progress.js"]
EMPTY = "—"


# --- Small display helpers ------------------------------------------------------------


def format_moment(moment: datetime | None) -> str:
    if moment is None:
        return EMPTY
    ago = "just now" if timezone.now() - moment < timedelta(minutes=1) else f"{timesince(moment, depth=1)} ago"
    return format_html(
        '<time class="sabito-time" datetime="{}" title="{}">{}</time> <span class="sabito-quiet">({})</span>',
        moment.isoformat(),
        timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z"),
        timezone.localtime(moment).strftime("%Y-%m-%d %H:%M"),
        ago,
    )


def format_duration(delta: timedelta | None) -> str:
    if delta is None:
        return EMPTY
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def badge(state: str, label: str, title: str = "") -> str:
    if title:
        return format_html('<span class="sabito-badge sabito-badge--{}" title="{}">{}</span>', state, title, label)
    return format_html('<span class="sabito-badge sabito-badge--{}">{}</span>', state, label)


def counters(*, created, updated, skipped, errors, processed=None) -> str:
    """The counters in a line that wraps between, never inside, its items."""
    items = [("created", created), ("updated", updated), ("skipped", skipped)]
    if processed is not None:
        items.insert(0, ("processed", processed))
    return format_html(
        '<span class="sabito-counters">{} · <span class="{}">errors <b>{}</b></span></span>',
        format_html_join(" · ", "<span>{} <b>{}</b></span>", items),
        "sabito-counters__errors" if errors else "",
        errors,
    )


def runs_url(mapping: SabitoMapping) -> str:
    return reverse("admin:sabito_sync_syncrun_changelist") + "?" + urlencode({"mapping__id__exact": mapping.pk})


# The badge of each run status.
RUN_STATE_BADGES: dict[str, str] = {
    SyncRun.Status.QUEUED: "queued",
    SyncRun.Status.RUNNING: "running",
    SyncRun.Status.SUCCEEDED: "succeeded",
    SyncRun.Status.FAILED: "failed",
    SyncRun.Status.CANCELLED: "cancelled",
    SyncRun.Status.INTERRUPTED: "interrupted",
    SyncRun.Status.ALREADY_RUNNING: "skipped",
}


def run_progress(run: SyncRun) -> str:
    """A queued or running run at a glance: its state, and the counters and pages so far."""
    state = badge(RUN_STATE_BADGES.get(run.status, "never"), run.get_status_display())
    if run.status == SyncRun.Status.QUEUED:
        return format_html(
            '{} <span class="sabito-quiet">waiting for a worker since {}</span>',
            state,
            timezone.localtime(run.started_at).strftime("%H:%M:%S"),
        )
    if run.status != SyncRun.Status.RUNNING:
        return state
    so_far = counters(
        processed=run.customers_processed,
        created=run.created,
        updated=run.updated,
        skipped=run.skipped,
        errors=run.errors,
    )
    stopping = " · cancel requested: stops after this page" if run.cancel_requested_at else ""
    return format_html(
        '{} <span class="sabito-progress">{} · pages <b>{}</b>{}</span>', state, so_far, run.pages_done, stopping
    )


def following(run: SyncRun, content: str) -> str:
    """`content` kept current while `run` is queued or running (see run_progress.js)."""
    if run.status in SyncRun.FINISHED_STATUSES:
        return content
    url = reverse("admin:sabito_sync_syncrun_progress", args=[quote(run.pk)])
    return format_html('<span class="sabito-run-progress" data-sabito-run-progress="{}">{}</span>', url, content)


def run_url(run: SyncRun) -> str:
    return reverse("admin:sabito_sync_syncrun_change", args=[quote(run.pk)])


def last_sync_result(mapping: SabitoMapping) -> dict:
    """`metadata["lastSyncResult"]`, or {} when there is none or it is not a dict
    (metadata is JSON anyone with database access can edit)."""
    return metadata.last_sync_result(mapping.metadata) or {}


def active_run(mapping: SabitoMapping) -> SyncRun | None:
    """The mapping's running run, or else its latest queued one (`runs.queries.active_runs`),
    from the admin's prefetch when there is one."""
    runs = getattr(mapping, "active_runs", None)
    if runs is None:
        runs = list(active_runs().filter(mapping=mapping)[:1])
    return runs[0] if runs else None
