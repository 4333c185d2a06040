"""NEXPro's tenants and customers, the Sabito business → tenant mappings, and the
history of sync runs. The names here are a contract: operators query them, the API
serialises them and the admin shows them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Lower

# C0 and C1 control characters and DEL. A name holding one could forge a log line
# (CR, LF) or drive an operator's terminal (ESC): refused wherever a person writes one.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
no_control_characters = RegexValidator(
    rf"[{CONTROL_CHARACTERS}]",
    inverse_match=True,
    message="Must not contain control characters (line breaks, tabs, escape codes).",
)


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, validators=[no_control_characters])
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_one_per_user_and_tenant"),
        ]

    def __str__(self):
        return f"{self.user} in {self.tenant} ({self.role})"


class Customer(models.Model):
    HOW_DID_YOU_HEAR_SABITO = "Sabito Referral"
    DEFAULT_COUNTRY = "USA"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="customers")
    email = models.CharField(max_length=254, blank=True, default="")
    name = models.CharField(max_length=255, blank=True, default="")
    phone = models.CharField(max_length=50, blank=True, default="")
    address = models.CharField(max_length=255, blank=True, default="")
    city = models.CharField(max_length=100, blank=True, default="")
    state = models.CharField(max_length=100, blank=True, default="")
    country = models.CharField(max_length=100, blank=True, default=DEFAULT_COUNTRY)
    how_did_you_hear = models.CharField(max_length=100, blank=True, default="")
    # NULL, not "", for a customer made by hand: the unique (tenant, Sabito id) index skips it.
    sabito_customer_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    sabito_source_referral_id = models.CharField(max_length=100, blank=True, default="")
    sabito_source_type = models.CharField(max_length=50, blank=True, default="")
    sabito_business_id = models.CharField(max_length=100, blank=True, default="")
    # Sabito's incremental feed cannot show deletions: a complete, successful full
    # sync that no longer receives a linked customer sets this (nothing is deleted);
    # the customer coming back clears it.
    sabito_missing_since = models.DateTimeField(null=True, blank=True)
    # A hash of the Sabito record this customer's synced fields were last written
    # from, exactly as Sabito sent it (`records.fingerprint_key`): a re-sync skips a
    # record with the same hash without checking or comparing it again. Any other
    # change to a synced field clears it (a database trigger, migration 0007), so a
    # fingerprint only ever vouches for the values it was written with.
    sabito_fingerprint = models.CharField(max_length=32, null=True, blank=True, editable=False)  # noqa: DJ001
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "email"]
        constraints = [
            # Matching relies on these: without them two concurrent syncs (or a sync
            # and a person) could both decide "not found" and create a duplicate.
            models.UniqueConstraint(
                fields=["tenant", "sabito_customer_id"],
                condition=Q(sabito_customer_id__isnull=False),
                name="customer_unique_sabito_id_per_tenant",
            ),
            models.UniqueConstraint(
                Lower("email"),
                "tenant",
                condition=~Q(email=""),
                name="customer_unique_email_per_tenant",
            ),
        ]

    def __str__(self):
        return self.name or self.email or str(self.id)


class SabitoMappingQuerySet(models.QuerySet):
    def active(self) -> SabitoMappingQuerySet:
        """The mappings scheduled and sync-all runs sync: those not paused."""
        return self.filter(is_active=True)

    def with_sync_running(self, *, live_runs: models.QuerySet[SyncRun]) -> SabitoMappingQuerySet:
        """Each mapping annotated with `sync_running`: whether one of `live_runs`
        (the runs that count as holding their mapping's lock; `runs.queries.live_runs`
        says which) is a run of it, in the same query."""
        return self.annotate(sync_running=Exists(live_runs.filter(mapping=OuterRef("pk"))))


class SabitoMapping(models.Model):
    """One Sabito business whose customers are kept in step with one NEXPro tenant.

    `metadata` holds the incremental watermark and the latest run's summary (its
    format is `sabito_sync.metadata`'s); the full history is `SyncRun`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sabito_business_id = models.CharField(max_length=100, unique=True, validators=[no_control_characters])
    business_name = models.CharField(max_length=200, validators=[no_control_characters])
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="sabito_mappings")
    is_active = models.BooleanField(default=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SabitoMappingQuerySet.as_manager()

    class Meta:
        ordering = ["business_name"]
        verbose_name = "Sabito mapping"

    def __str__(self):
        return f"{self.business_name} ({self.sabito_business_id})"

    @property
    def last_synced_at(self):
        """The incremental watermark as an aware datetime, or None before the first success."""
        from django.utils.dateparse import parse_datetime

        from .metadata import watermark_text

        value = watermark_text(self.metadata)
        return parse_datetime(value) if value else None

    @property
    def watermark_reset_reason(self) -> str:
        """Why the watermark was reset on purpose, or "" (see `metadata.watermark_reset_reason`)."""
        from .metadata import watermark_reset_reason

        return watermark_reset_reason(self.metadata)


class SyncRun(models.Model):
    class Trigger(models.TextChoices):
        CLI = "cli", "Command line"
        API = "api", "API"
        ADMIN = "admin", "Admin"
        BEAT = "beat", "Schedule"
        STARTUP = "startup", "Start-up"
        # Queued again by the platform: a run whose worker died or was stopped.
        RECOVERY = "recovery", "Recovery"

    class Status(models.TextChoices):
        # Asked for and waiting for a worker (the API and the admin create the row
        # when they queue the task, so a caller can follow the run from the start).
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        # Stopped on request once the pages it had fetched were written; what it wrote stays.
        CANCELLED = "cancelled", "Cancelled"
        # Stopped because its worker was shutting down; queued again to resume.
        INTERRUPTED = "interrupted", "Interrupted"
        # A trigger that arrived while another run held the mapping: kept so the
        # history shows it was asked for and why nothing ran.
        ALREADY_RUNNING = "already_running", "Already running"

    class StopReason(models.TextChoices):
        # Asked to stop because its worker was shutting down (it ends interrupted)...
        SHUTDOWN = "shutdown", "Worker shutting down"
        # ... and, once the reaper has queued its sync again, this.
        QUEUED_AGAIN = "queued_again", "Queued again after a shutdown"
        # Its worker died: ended by the reaper, or taken over by the mapping's next run.
        ABANDONED = "abandoned", "Worker died"

    # A run in one of these has ended and will not change again.
    FINISHED_STATUSES = frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED, Status.ALREADY_RUNNING}
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    mapping = models.ForeignKey(SabitoMapping, on_delete=models.CASCADE, related_name="runs")
    full_sync = models.BooleanField(default=False)
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Touched every SABITO_HEARTBEAT_SECONDS by the running sync, whatever it is
    # waiting on: a running run whose heartbeat is older than SABITO_STALE_RUN_AFTER
    # belongs to a dead worker and may be taken over.
    heartbeat_at = models.DateTimeField()
    updated_after = models.DateTimeField(null=True, blank=True)
    customers_processed = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    # Linked customers a complete full sync no longer received from Sabito.
    marked_missing = models.PositiveIntegerField(default=0)
    error_details = models.JSONField(default=list, blank=True)
    error_message = models.TextField(blank=True, default="")
    pages_done = models.PositiveIntegerField(default=0)
    # Set by a cancel request, or by its worker shutting down (then `stop_reason` is
    # SHUTDOWN); the run stops once the pages it has fetched are written.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True, default="")
    # Where the feed stands after the last committed page (offset and the pager's
    # anchor records), so a later run can resume instead of starting over.
    checkpoint = models.JSONField(null=True, blank=True)
    # The Celery worker running it (its node name), for a shutdown to find its runs.
    worker = models.CharField(max_length=200, blank=True, default="")
    # Why this run is what it is, when that is not obvious from its trigger: for
    # example the first run after the mapping was re-pointed at another business.
    note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["mapping", "-started_at"], name="syncrun_mapping_recent")]
        constraints = [
            # The per-mapping lock: a second run cannot be inserted while one is
            # running, on PostgreSQL and SQLite alike, across processes and hosts.
            models.UniqueConstraint(
                fields=["mapping"],
                condition=Q(status="running"),
                name="syncrun_one_running_per_mapping",
            ),
        ]

    def __str__(self):
        kind = "full" if self.full_sync else "incremental"
        return f"{kind} sync of {self.mapping.business_name} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.status})"

    @property
    def duration(self):
        return (self.finished_at - self.started_at) if self.finished_at else None


class AppliedSchedule(models.Model):
    """The SABITO_SYNC_INTERVAL and SABITO_SYNC_ENABLED last written to a periodic task
    row, by that row's name. `migrate` and beat start compare the settings with this,
    not with the row, so an operator's pause or edit in the admin stands until one of
    the settings itself changes."""

    periodic_task_name = models.CharField(max_length=200, unique=True)
    sync_interval = models.CharField(max_length=200)
    sync_enabled = models.BooleanField()
    applied_at = models.DateTimeField()

    def __str__(self):
        state = "enabled" if self.sync_enabled else "disabled"
        return f"{self.periodic_task_name}: cron '{self.sync_interval}', {state}, applied {self.applied_at:%Y-%m-%d %H:%M:%S}"


class SyncTick(models.Model):
    """One fan-out of the periodic or the start-up sync: how many mapping tasks it
    queued and how many have finished, with their totals. Each finishing task adds
    itself in one atomic update, and the one that completes the count logs the
    tick's summary; no worker waits for another (`sabito_sync.ticks`)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    trigger = models.CharField(max_length=20, choices=SyncRun.Trigger.choices)
    full_sync = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    expected = models.PositiveIntegerField()
    finished = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self):
        return f"{self.get_trigger_display()} sync of {self.expected} mappings at {self.started_at:%Y-%m-%d %H:%M:%S}"


class SyncTickMapping(models.Model):
    """A mapping whose task of a tick has finished. Unique per tick, so a task that
    Celery delivers twice is counted once."""

    tick = models.ForeignKey(SyncTick, on_delete=models.CASCADE, related_name="finished_mappings")
    # Not a foreign key: the mapping may be deleted while its tick is still counting.
    mapping_id = models.UUIDField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tick", "mapping_id"], name="synctickmapping_once_per_tick"),
        ]

    def __str__(self) -> str:
        return f"mapping {self.mapping_id} of tick {self.tick_id}"


class SchedulerHeartbeat(models.Model):
    """When Celery beat last ran its loop, and the longest it sleeps between two
    rounds: `/readyz` reports beat missing once it has been silent for twice that."""

    name = models.CharField(max_length=100, unique=True)
    seen_at = models.DateTimeField()
    tick_seconds = models.FloatField()
    hostname = models.CharField(max_length=255, blank=True, default="")

    def __str__(self):
        return f"{self.name} on {self.hostname or '?'}, seen {self.seen_at:%Y-%m-%d %H:%M:%S}"
