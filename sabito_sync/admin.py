"""The Django admin: set up tenants and mappings, press "sync now", read the history.

The admin is the platform operators': Django's model permissions decide what each
may see and do (`is_staff` only lets them log in). The sync and cancel buttons and
actions, and saving or deleting a mapping, are thin interfaces over the mapping
service (`mappings`), like the API and the command: they queue syncs through
`request_sync`, cancel through `cancel_run`, and report with a message; the sync
itself never runs inside the request (it can take minutes). A page showing a queued
or running run follows it (`run_progress.js` polls the run's progress view) and
reloads itself once the run has finished.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Prefetch
from django.db.models.fields.json import KT
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_POST

from . import access, metadata
from . import mappings as mapping_service
from .access import Action, ActionRefused
from .mappings import RunAlreadyFinished, SyncIsRunning, SyncQueueUnavailable
from .models import Customer, Membership, SabitoMapping, SyncRun, Tenant
from .serializers import SyncRunSerializer

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


RUN_STATE_BADGES = {
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
        processed=run.customers_processed, created=run.created, updated=run.updated, skipped=run.skipped, errors=run.errors
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


class MappingDeletionMixin:
    """Deleting mappings, directly or with the tenant that holds them, is refused
    while any of them syncs (`mappings.ensure_no_sync_running`), on the delete page
    and in the bulk action alike.

    Runs cannot be deleted one by one (they are the audit trail), which would make
    Django refuse to delete a mapping or tenant that has any ("your account doesn't
    have permission to delete: sync runs"). Whoever may delete the mapping may take
    its history with it."""

    def mappings_deleted_with(self, objs) -> list[SabitoMapping]:
        raise NotImplementedError

    def deletion_refusal(self, objs) -> str | None:
        try:
            mapping_service.ensure_no_sync_running(
                self.mappings_deleted_with(objs), to=f"delete the {self.opts.verbose_name} (pause the mapping meanwhile)"
            )
        except SyncIsRunning as exc:
            return str(exc)
        return None

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(SyncRun._meta.verbose_name)
        return deleted, model_count, perms_needed, protected

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        refusal = obj is not None and self.has_delete_permission(request, obj) and self.deletion_refusal([obj])
        if refusal:
            self.message_user(request, refusal, messages.ERROR)
            change_url = reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,
            )
            return HttpResponseRedirect(change_url)
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (type(self).delete_selected_unless_syncing, name, description)
        return actions

    def delete_selected_unless_syncing(self, request, queryset):
        refusal = self.deletion_refusal(queryset)
        if refusal:
            self.message_user(request, refusal, messages.ERROR)
            return None
        return delete_selected(self, request, queryset)


# --- Tenants and memberships ---------------------------------------------------------


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


class SabitoMappingInline(admin.TabularInline):
    model = SabitoMapping
    extra = 0
    fields = ["business_name", "sabito_business_id", "is_active"]
    show_change_link = True


@admin.register(Tenant)
class TenantAdmin(MappingDeletionMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "member_count", "mapping_count", "created_at"]
    # Explicit, because the counts' GROUP BY drops the model's default ordering.
    ordering = ["name"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
    inlines = [MembershipInline, SabitoMappingInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("memberships", distinct=True),
                mapping_total=Count("sabito_mappings", distinct=True),
            )
        )

    def mappings_deleted_with(self, tenants) -> list[SabitoMapping]:
        return list(SabitoMapping.objects.filter(tenant__in=[tenant.pk for tenant in tenants]))

    @admin.display(description="Members", ordering="member_total")
    def member_count(self, tenant):
        return tenant.member_total

    @admin.display(description="Sabito mappings", ordering="mapping_total")
    def mapping_count(self, tenant):
        return tenant.mapping_total


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    list_select_related = ["user", "tenant"]
    search_fields = ["user__username", "user__email", "tenant__name", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]
    readonly_fields = ["created_at"]


# --- Customers -----------------------------------------------------------------------


class FromSabitoFilter(admin.SimpleListFilter):
    title = "from Sabito"
    parameter_name = "from_sabito"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(sabito_customer_id__isnull=False)
        if self.value() == "no":
            return queryset.filter(sabito_customer_id__isnull=True)
        return queryset


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "tenant", "phone", "city", "country", "from_sabito", "sabito_customer_id", "updated_at"]
    list_filter = ["tenant", FromSabitoFilter]
    list_select_related = ["tenant"]
    search_fields = ["name", "email", "sabito_customer_id"]
    autocomplete_fields = ["tenant"]
    # Owned by the sync: an edit here would be overwritten (or would break matching)
    # at the next run.
    sabito_fields = ["sabito_customer_id", "sabito_business_id", "sabito_source_referral_id", "sabito_source_type"]
    readonly_fields = [*sabito_fields, "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "email", "phone", "how_did_you_hear"]}),
        ("Address", {"fields": ["address", "city", "state", "country"]}),
        ("Sabito", {"fields": sabito_fields, "description": "Written by the Sabito sync; read-only."}),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="From Sabito", boolean=True, ordering="sabito_customer_id")
    def from_sabito(self, customer):
        return customer.sabito_customer_id is not None


# --- Sabito mappings -------------------------------------------------------------------


class SabitoMappingForm(forms.ModelForm):
    """Re-pointing a mapping (another business or tenant) waits for its running sync;
    said here so the operator sees it on the form (the service refuses it anyway)."""

    class Meta:
        model = SabitoMapping
        fields = ["business_name", "sabito_business_id", "tenant", "is_active"]

    def clean(self):
        cleaned = super().clean()
        repointed = {"sabito_business_id", "tenant"} & set(self.changed_data)
        if self.instance.pk and repointed:
            try:
                mapping_service.ensure_no_sync_running([self.instance], to="change its Sabito business or tenant")
            except SyncIsRunning as exc:
                raise ValidationError(str(exc)) from None
        return cleaned


@admin.register(SabitoMapping)
class SabitoMappingAdmin(MappingDeletionMixin, admin.ModelAdmin):
    form = SabitoMappingForm
    empty_value_display = EMPTY
    # The state right after the name: it is what an operator scans the list for.
    list_display = ["business", "sync_state", "last_sync", "last_result", "runs_link", "tenant", "active"]
    list_display_links = ["business"]
    list_filter = ["is_active", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["business_name", "sabito_business_id", "tenant__name"]
    autocomplete_fields = ["tenant"]
    actions = ["full_sync_selected", "incremental_sync_selected"]
    readonly_fields = [
        "sync_state",
        "current_run",
        "last_state",
        "last_sync",
        "last_result",
        "last_error",
        "watermark",
        "runs_link",
        "metadata",
        "created_at",
        "updated_at",
    ]
    change_form_template = "admin/sabito_sync/sabitomapping/change_form.html"
    change_list_template = "admin/sabito_sync/sabitomapping/change_list.html"

    class Media:
        css = ADMIN_CSS
        js = ADMIN_JS

    def get_fieldsets(self, request, obj=None):
        mapping = (None, {"fields": ["business_name", "sabito_business_id", "tenant", "is_active"]})
        if obj is None:
            return [mapping]
        return [
            mapping,
            (
                "Sync status",
                {"fields": ["current_run", "last_state", "last_sync", "last_result", "last_error", "watermark", "runs_link"]},
            ),
            ("Record", {"fields": ["created_at", "updated_at", "metadata"], "classes": ["collapse"]}),
        ]

    def get_queryset(self, request):
        # Two queries for the whole list: the last result lives in the mapping's own
        # metadata, its queued or running run comes with one more.
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("runs", queryset=mapping_service.active_runs(), to_attr="active_runs"))
        )

    def save_model(self, request, obj, form, change):
        try:
            if not change:
                created = mapping_service.create_mapping(
                    actor=request.user,
                    tenant=obj.tenant,
                    sabito_business_id=obj.sabito_business_id,
                    business_name=obj.business_name,
                    is_active=obj.is_active,
                )
                obj.pk, obj._state.adding = created.pk, False
            elif form.changed_data:
                # The service compares with the stored row and writes only what changed,
                # never a stale copy of metadata (a worker may have written the watermark
                # since this form was loaded); re-pointing resets the watermark.
                mapping_service.update_mapping(
                    actor=request.user,
                    mapping=SabitoMapping.objects.select_related("tenant").get(pk=obj.pk),
                    business_name=obj.business_name,
                    is_active=obj.is_active,
                    sabito_business_id=obj.sabito_business_id,
                    tenant_id=obj.tenant_id,
                )
        except ActionRefused as exc:
            raise PermissionDenied(str(exc)) from None

    def mappings_deleted_with(self, mappings) -> list[SabitoMapping]:
        return list(mappings)

    def delete_model(self, request, obj):
        mapping_service.delete_mapping(actor=request.user, mapping=obj)

    # -- columns and read-only fields

    @admin.display(description="Business", ordering="business_name")
    def business(self, mapping):
        return format_html('{}<br><span class="sabito-quiet">{}</span>', mapping.business_name, mapping.sabito_business_id)

    @admin.display(description="Active", boolean=True, ordering="is_active")
    def active(self, mapping):
        return mapping.is_active

    @admin.display(description="State")
    def sync_state(self, mapping):
        if run := active_run(mapping):
            return following(run, run_progress(run))
        return self.last_state(mapping)

    @admin.display(description="Last state")
    def last_state(self, mapping):
        result = last_sync_result(mapping)
        if not result:
            return badge("never", "Never synced")
        if result.get("success"):
            return badge("succeeded", "Succeeded")
        return badge("failed", "Failed", title=str(result.get("error") or ""))

    # syncedAt is always written as UTC ISO 8601 with milliseconds, so text order is time order.
    @admin.display(description="Last sync", ordering=KT("metadata__lastSyncResult__syncedAt"))
    def last_sync(self, mapping):
        synced_at = last_sync_result(mapping).get("syncedAt")
        return format_moment(parse_datetime(synced_at) if isinstance(synced_at, str) else None)

    @admin.display(description="Last result")
    def last_result(self, mapping):
        result = last_sync_result(mapping)
        if not result:
            return EMPTY
        return counters(
            processed=result.get("customersProcessed", 0),
            created=result.get("created", 0),
            updated=result.get("updated", 0),
            skipped=result.get("skipped", 0),
            errors=result.get("errors", 0),
        )

    @admin.display(description="Last error")
    def last_error(self, mapping):
        return last_sync_result(mapping).get("error") or EMPTY

    @admin.display(description="Incremental watermark")
    def watermark(self, mapping):
        if mapping.last_synced_at is None:
            return "None yet: the next sync fetches every customer"
        return format_html(
            "{}<br>The next incremental sync asks Sabito for customers updated after this.",
            format_moment(mapping.last_synced_at),
        )

    @admin.display(description="Current run")
    def current_run(self, mapping):
        run = active_run(mapping)
        if run is None:
            return "None: no sync of it is queued or running"
        return format_html('{} <a href="{}">View run</a>', following(run, run_progress(run)), run_url(run))

    @admin.display(description="Runs")
    def runs_link(self, mapping):
        return format_html('<a href="{}">View runs</a>', runs_url(mapping))

    # -- sync buttons and actions

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        sync_now = self.admin_site.admin_view(require_POST(self.sync_now_view))
        return [
            path(
                "sync-all/",
                self.admin_site.admin_view(require_POST(self.sync_all_view)),
                name="%s_%s_sync_all" % info,
            ),
            path("<path:object_id>/sync/full/", sync_now, {"full_sync": True}, name="%s_%s_sync_full" % info),
            path(
                "<path:object_id>/sync/incremental/",
                sync_now,
                {"full_sync": False},
                name="%s_%s_sync_incremental" % info,
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {"can_sync": self.has_change_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["can_sync"] = self.has_change_permission(request, obj)
            context["runs_url"] = runs_url(obj)
            run = active_run(obj)
            if run is not None and access.may(request.user, Action.MANAGE, tenant=obj.tenant):
                context["cancel_run_url"] = reverse("admin:sabito_sync_syncrun_cancel", args=[quote(run.pk)])
                context["cancel_run_next"] = request.get_full_path()
        return super().render_change_form(request, context, add, change, form_url, obj)

    def sync_now_view(self, request, object_id, full_sync):
        if not self.has_change_permission(request):
            raise PermissionDenied
        mapping = self.get_object(request, unquote(object_id))
        if mapping is None:
            raise Http404(f"No Sabito mapping with id {object_id}")
        if not self.has_change_permission(request, mapping):
            raise PermissionDenied
        self.queue_syncs(request, [mapping], full_sync=full_sync)
        change_url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[quote(mapping.pk)],
            current_app=self.admin_site.name,
        )
        return HttpResponseRedirect(self.with_preserved_filters(request, change_url))

    def sync_all_view(self, request):
        if not self.has_change_permission(request):
            raise PermissionDenied
        mappings = self.get_queryset(request).filter(is_active=True)
        if not self.queue_syncs(request, mappings, full_sync=False):
            self.message_user(request, "There are no active mappings to sync.", messages.WARNING)
        changelist_url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist", current_app=self.admin_site.name
        )
        return HttpResponseRedirect(self.with_preserved_filters(request, changelist_url))

    @admin.action(description="Full sync selected mappings now", permissions=["change"])
    def full_sync_selected(self, request, queryset):
        self.queue_syncs(request, queryset, full_sync=True)

    @admin.action(description="Incremental sync selected mappings now", permissions=["change"])
    def incremental_sync_selected(self, request, queryset):
        self.queue_syncs(request, queryset, full_sync=False)

    def with_preserved_filters(self, request, url):
        return add_preserved_filters({"preserved_filters": self.get_preserved_filters(request), "opts": self.opts}, url)

    def queue_syncs(self, request, mappings, *, full_sync: bool) -> int:
        """Queue a sync of every mapping not already running (`mappings.request_sync`)
        and say what happened; returns how many mappings were considered."""
        mappings = list(mappings)
        kind = "Full" if full_sync else "Incremental"
        try:
            outcome = mapping_service.request_sync(
                actor=request.user, mappings=mappings, full_sync=full_sync, trigger=SyncRun.Trigger.ADMIN
            )
        except ActionRefused as exc:
            raise PermissionDenied(str(exc)) from None
        except SyncQueueUnavailable as exc:
            outcome = exc.request
            self.message_user(
                request,
                f"{exc} Check that the Celery broker is running; {len(outcome.queued)} of "
                f"{len(mappings) - len(outcome.already_running)} syncs were queued.",
                messages.ERROR,
            )
        queued, running = [item.mapping for item in outcome.queued], outcome.already_running

        if len(queued) == 1:
            self.message_user(request, f"{kind} sync queued for {queued[0].business_name}", messages.SUCCESS)
        elif queued:
            self.message_user(request, f"{kind} sync queued for {len(queued)} mappings", messages.SUCCESS)
        if len(running) == 1:
            self.message_user(request, f"A sync is already running for {running[0].business_name}", messages.WARNING)
        elif running:
            names = ", ".join(mapping.business_name for mapping in running)
            self.message_user(
                request, f"Skipped {len(running)} mappings with a sync already running: {names}", messages.WARNING
            )
        return len(mappings)


# --- Sync runs -------------------------------------------------------------------------

def active_run(mapping: SabitoMapping) -> SyncRun | None:
    """The mapping's running run, or else its latest queued one (`mappings.active_runs`),
    from the admin's prefetch when there is one."""
    runs = getattr(mapping, "active_runs", None)
    if runs is None:
        runs = list(mapping_service.active_runs().filter(mapping=mapping)[:1])
    return runs[0] if runs else None


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    """The history, read-only: a run is written by the sync and only by the sync."""

    empty_value_display = EMPTY
    list_display = ["started_at", "mapping_name", "state", "result", "run_duration", "kind", "trigger"]
    list_filter = ["mapping", "mapping__tenant", "status", "trigger", "full_sync"]
    search_fields = ["mapping__business_name", "mapping__sabito_business_id", "error_message"]
    ordering = ["-started_at"]
    date_hierarchy = "started_at"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "mapping_link",
                    "tenant",
                    "kind",
                    "trigger",
                    "state",
                    "progress",
                    "started_at",
                    "finished_at",
                    "run_duration",
                    "heartbeat_at",
                    "updated_after_used",
                    "note",
                ]
            },
        ),
        ("Counters", {"fields": ["customers_processed", "created", "updated", "skipped", "errors", "pages_done"]}),
        ("Errors", {"fields": ["error_message", "error_details_table"]}),
    ]
    readonly_fields = [
        "mapping_link",
        "tenant",
        "kind",
        "state",
        "progress",
        "run_duration",
        "updated_after_used",
        "error_details_table",
    ]
    change_form_template = "admin/sabito_sync/syncrun/change_form.html"

    class Media:
        css = ADMIN_CSS
        js = ADMIN_JS

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("mapping__tenant")

    def has_add_permission(self, request):
        return False

    def has_view_permission(self, request, obj=None):
        # A mapping's runs are its history: whoever may read mappings may read them,
        # as in the API.
        return super().has_view_permission(request, obj) or access.may(request.user, Action.READ, tenant=None, role=None)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # -- following and cancelling a run

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(require_POST(self.cancel_view)),
                name="%s_%s_cancel" % info,
            ),
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(require_GET(self.progress_view)),
                name="%s_%s_progress" % info,
            ),
            *super().get_urls(),
        ]

    def viewed_run(self, request, object_id) -> SyncRun:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404(f"No sync run with id {object_id}")
        return run

    def cancel_view(self, request, object_id):
        run = self.viewed_run(request, object_id)
        try:
            run = mapping_service.cancel_run(actor=request.user, run=run)
        except ActionRefused as exc:
            raise PermissionDenied(str(exc)) from None
        except RunAlreadyFinished as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            if run.status == SyncRun.Status.CANCELLED:
                self.message_user(request, f"Cancelled the queued sync of {run.mapping.business_name}", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"Cancel requested: the sync of {run.mapping.business_name} stops once the pages it has fetched are written",
                    messages.SUCCESS,
                )
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
            back = run_url(run)
        return HttpResponseRedirect(back)

    def progress_view(self, request, object_id):
        """The run as the API shows it, plus its progress rendered as the pages show it."""
        run = self.viewed_run(request, object_id)
        return JsonResponse(
            {
                "finished": run.status in SyncRun.FINISHED_STATUSES,
                "html": run_progress(run),
                "run": SyncRunSerializer(run).data,
            }
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.status not in SyncRun.FINISHED_STATUSES:
            if access.may(request.user, Action.MANAGE, tenant=obj.mapping.tenant):
                context["cancel_run_url"] = reverse("admin:sabito_sync_syncrun_cancel", args=[quote(obj.pk)])
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="Progress")
    def progress(self, run):
        if run.status in SyncRun.FINISHED_STATUSES:
            return EMPTY
        return following(run, run_progress(run))

    @admin.display(description="Mapping", ordering="mapping__business_name")
    def mapping_name(self, run):
        return format_html('{}<br><span class="sabito-quiet">{}</span>', run.mapping.business_name, run.mapping.tenant)

    @admin.display(description="Mapping")
    def mapping_link(self, run):
        url = reverse("admin:sabito_sync_sabitomapping_change", args=[quote(run.mapping_id)])
        return format_html('<a href="{}">{}</a>', url, run.mapping)

    @admin.display(description="Tenant", ordering="mapping__tenant__name")
    def tenant(self, run):
        return run.mapping.tenant

    @admin.display(description="Kind", ordering="full_sync")
    def kind(self, run):
        return "Full" if run.full_sync else "Incremental"

    @admin.display(description="Status", ordering="status")
    def state(self, run):
        return badge(RUN_STATE_BADGES.get(run.status, "never"), run.get_status_display(), title=run.error_message)

    @admin.display(description="Result")
    def result(self, run):
        if run.status == SyncRun.Status.ALREADY_RUNNING:
            return "Not started: another run held the mapping"
        return counters(
            processed=run.customers_processed,
            created=run.created,
            updated=run.updated,
            skipped=run.skipped,
            errors=run.errors,
        )

    @admin.display(description="Duration")
    def run_duration(self, run):
        if run.status == SyncRun.Status.RUNNING:
            return f"running for {timesince(run.started_at, depth=2)}"
        if run.status in (SyncRun.Status.ALREADY_RUNNING, SyncRun.Status.QUEUED):
            return EMPTY
        return format_duration(run.duration)

    @admin.display(description="Asked Sabito for customers updated after")
    def updated_after_used(self, run):
        if run.updated_after is None:
            return "None: every customer was fetched (full sync or first sync)"
        return format_moment(run.updated_after)

    @admin.display(description="Error details")
    def error_details_table(self, run):
        details = run.error_details if isinstance(run.error_details, list) else []
        if not details:
            return EMPTY
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (detail.get("sabitoCustomerId") or EMPTY, detail.get("email") or EMPTY, detail.get("reason") or EMPTY)
                if isinstance(detail, dict)
                else (EMPTY, EMPTY, detail)
                for detail in details
            ),
        )
        note = ""
        if run.errors > len(details):
            note = format_html(
                '<p class="help">Showing the first {} of {} errors; the rest were counted, not stored.</p>',
                len(details),
                run.errors,
            )
        return format_html(
            '<table class="sabito-error-details"><thead><tr><th scope="col">Sabito customer id</th>'
            '<th scope="col">Email</th><th scope="col">Reason</th></tr></thead><tbody>{}</tbody></table>{}',
            rows,
            note,
        )
