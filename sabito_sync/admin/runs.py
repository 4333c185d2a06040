"""The run history, read-only; following and cancelling a run."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_POST

from ..api.serializers import SyncRunSerializer
from ..models import SyncRun
from ..services import access
from ..services import syncs as sync_service
from ..services.access import Action, ActionRefused
from ..services.syncs import RunAlreadyFinished
from .display import (
    ADMIN_CSS,
    ADMIN_JS,
    EMPTY,
    RUN_STATE_BADGES,
    badge,
    counters,
    following,
    format_duration,
    format_moment,
    run_progress,
    run_url,
)


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
        return super().has_view_permission(request, obj) or access.may(
            request.user, Action.READ, tenant=None, role=None
        )

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # -- following and cancelling a run

    def get_urls(self):
        app_label, model_name = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(require_POST(self.cancel_view)),
                name=f"{app_label}_{model_name}_cancel",
            ),
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(require_GET(self.progress_view)),
                name=f"{app_label}_{model_name}_progress",
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
            run = sync_service.cancel_run(actor=request.user, run=run)
        except ActionRefused as exc:
            raise PermissionDenied(str(exc)) from None
        except RunAlreadyFinished as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            if run.status == SyncRun.Status.CANCELLED:
                self.message_user(
                    request, f"Cancelled the queued sync of {run.mapping.business_name}", messages.SUCCESS
                )
            else:
                self.message_user(
                    request,
                    f"Cancel requested: the sync of {run.mapping.business_name} stops once the pages it has fetched are written",
                    messages.SUCCESS,
                )
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
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
        if (
            obj is not None
            and obj.status not in SyncRun.FINISHED_STATUSES
            and access.may(request.user, Action.MANAGE, tenant=obj.mapping.tenant)
        ):
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
