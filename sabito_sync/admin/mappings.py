"""Sabito mappings: set them up, see their state, press "sync now".

The sync buttons and actions, and saving or deleting a mapping, are thin interfaces
over the services (`services.mappings`, `services.syncs`): they queue syncs (the sync
itself never runs inside the request) and report with a message. A page showing a
queued or running run follows it (`run_progress.js` polls the run's progress view)
and reloads itself once the run has finished."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.db.models.fields.json import KT
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from ..models import SabitoMapping, SyncRun
from ..runs.queries import active_runs
from ..services import access
from ..services import mappings as mapping_service
from ..services import syncs as sync_service
from ..services.access import Action, ActionRefused
from ..services.syncs import SyncQueueUnavailable
from .deletion import MappingDeletionMixin
from .display import (
    ADMIN_CSS,
    ADMIN_JS,
    EMPTY,
    active_run,
    badge,
    counters,
    following,
    format_moment,
    last_sync_result,
    run_progress,
    run_url,
    runs_url,
)
from .forms import SabitoMappingForm


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
                {
                    "fields": [
                        "current_run",
                        "last_state",
                        "last_sync",
                        "last_result",
                        "last_error",
                        "watermark",
                        "runs_link",
                    ]
                },
            ),
            ("Record", {"fields": ["created_at", "updated_at", "metadata"], "classes": ["collapse"]}),
        ]

    def get_queryset(self, request):
        # Two queries for the whole list: the last result lives in the mapping's own
        # metadata, its queued or running run comes with one more.
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("runs", queryset=active_runs(), to_attr="active_runs"))
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
        return format_html(
            '{}<br><span class="sabito-quiet">{}</span>', mapping.business_name, mapping.sabito_business_id
        )

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
        app_label, model_name = self.opts.app_label, self.opts.model_name
        sync_now = self.admin_site.admin_view(require_POST(self.sync_now_view))
        return [
            path(
                "sync-all/",
                self.admin_site.admin_view(require_POST(self.sync_all_view)),
                name=f"{app_label}_{model_name}_sync_all",
            ),
            path(
                "<path:object_id>/sync/full/", sync_now, {"full_sync": True}, name=f"{app_label}_{model_name}_sync_full"
            ),
            path(
                "<path:object_id>/sync/incremental/",
                sync_now,
                {"full_sync": False},
                name=f"{app_label}_{model_name}_sync_incremental",
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
        mappings = self.get_queryset(request).active()
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
        """Queue a sync of every mapping without a run queued or running (one with one
        joins it: `services.syncs.request_sync`) and say what happened; returns how
        many mappings were considered."""
        mappings = list(mappings)
        kind = "Full" if full_sync else "Incremental"
        try:
            outcome = sync_service.request_sync(
                actor=request.user, mappings=mappings, full_sync=full_sync, trigger=SyncRun.Trigger.ADMIN
            )
        except ActionRefused as exc:
            raise PermissionDenied(str(exc)) from None
        except SyncQueueUnavailable as exc:
            outcome = exc.request
            self.message_user(
                request,
                f"{exc} Check that the Celery broker is running; {len(outcome.queued)} of "
                f"{len(mappings) - len(outcome.already_running) - len(outcome.attached)} syncs were queued.",
                messages.ERROR,
            )
        queued = [item.mapping for item in outcome.queued]
        if len(queued) == 1:
            self.message_user(request, f"{kind} sync queued for {queued[0].business_name}", messages.SUCCESS)
        elif queued:
            self.message_user(request, f"{kind} sync queued for {len(queued)} mappings", messages.SUCCESS)
        # Joined: the run already queued or running is the one to follow.
        # A full sync refused while an incremental one runs reads the same: a sync runs.
        running = [
            *(item.mapping for item in outcome.attached if item.run.status == SyncRun.Status.RUNNING),
            *outcome.already_running,
        ]
        waiting = [item.mapping for item in outcome.attached if item.run.status != SyncRun.Status.RUNNING]
        if len(running) == 1:
            self.message_user(request, f"A sync is already running for {running[0].business_name}", messages.WARNING)
        elif running:
            names = ", ".join(mapping.business_name for mapping in running)
            self.message_user(
                request, f"Skipped {len(running)} mappings with a sync already running: {names}", messages.WARNING
            )
        if waiting:
            names = ", ".join(mapping.business_name for mapping in waiting)
            self.message_user(request, f"A sync is already queued for {names}", messages.WARNING)
        return len(mappings)
