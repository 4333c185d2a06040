"""`GET /metrics`: Prometheus text format, computed from the database at scrape time.

Web and worker processes run on several machines, so counters kept in one process
would each see a fraction of the runs. `SyncCollector` reads the recorded runs
instead, in three queries whatever the number of runs and mappings, so every web
process answers the same numbers. The run and record figures describe the stored
history: `sabito_prune_runs` lowers them, which is why they are gauges.

With METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>` may read them.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, OuterRef, Q, Subquery, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from ..models import SabitoMapping, SyncRun

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
RECORD_OUTCOMES = {"created": "created", "updated": "updated", "skipped": "skipped", "error": "errors"}


class SyncCollector:
    def collect(self):
        yield from self.run_metrics()
        yield from self.duration_metrics()
        yield self.last_success_metric()

    def run_metrics(self):
        runs = GaugeMetricFamily("sabito_sync_runs", "Recorded sync runs, by status.", labels=["status"])
        records = GaugeMetricFamily(
            "sabito_sync_records", "Records of the recorded runs, by outcome.", labels=["outcome"]
        )
        rows = {
            row["status"]: row
            for row in SyncRun.objects.order_by()
            .values("status")
            .annotate(n=Count("pk"), **{field: Sum(field) for field in RECORD_OUTCOMES.values()})
        }
        for status in SyncRun.Status.values:
            runs.add_metric([status], rows.get(status, {}).get("n", 0))
        for outcome, field in RECORD_OUTCOMES.items():
            records.add_metric([outcome], sum(row[field] or 0 for row in rows.values()))
        running = GaugeMetricFamily("sabito_sync_runs_running", "Sync runs running now.")
        running.add_metric([], rows.get(SyncRun.Status.RUNNING, {}).get("n", 0))
        return [runs, records, running]

    def duration_metrics(self):
        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        finished = SyncRun.objects.filter(
            status__in=[SyncRun.Status.SUCCEEDED, SyncRun.Status.FAILED], finished_at__isnull=False
        ).annotate(elapsed=duration)  # not `duration`: that name is a property of SyncRun
        figures = finished.aggregate(
            count=Count("pk"),
            total=Sum("elapsed"),
            reaped=Count("pk", filter=Q(status=SyncRun.Status.FAILED, stop_reason=SyncRun.StopReason.ABANDONED)),
            **{
                f"le_{bound}": Count("pk", filter=Q(elapsed__lte=timedelta(seconds=bound)))
                for bound in DURATION_BUCKETS
            },
        )
        histogram = HistogramMetricFamily(
            "sabito_sync_run_duration_seconds",
            "Duration of the recorded finished runs (succeeded or failed).",
            buckets=[(str(float(bound)), figures[f"le_{bound}"]) for bound in DURATION_BUCKETS]
            + [("+Inf", figures["count"])],
            sum_value=(figures["total"] or timedelta()).total_seconds(),
        )
        reaped = GaugeMetricFamily(
            "sabito_sync_dead_runs_reaped",
            "Recorded runs whose worker died, marked failed when the next run took over.",
        )
        reaped.add_metric([], figures["reaped"])
        return [histogram, reaped]

    def last_success_metric(self):
        gauge = GaugeMetricFamily(
            "sabito_sync_seconds_since_last_success",
            "Seconds since each active mapping's latest successful sync finished (+Inf: never).",
            labels=["mapping_id", "business_id", "tenant_id"],
        )
        latest_success = (
            SyncRun.objects.filter(mapping=OuterRef("pk"), status=SyncRun.Status.SUCCEEDED)
            .order_by("-started_at")
            .values("finished_at")[:1]
        )
        now = timezone.now()
        mappings = (
            SabitoMapping.objects.active()
            .annotate(last_success=Subquery(latest_success))
            .values_list("pk", "sabito_business_id", "tenant_id", "last_success")
            .order_by("pk")
        )
        for pk, business_id, tenant_id, last_success in mappings:
            seconds = (now - last_success).total_seconds() if last_success else float("inf")
            gauge.add_metric([str(pk), business_id, str(tenant_id)], max(seconds, 0.0))
        return gauge


registry = CollectorRegistry()
registry.register(SyncCollector())


def holds_metrics_token(request: HttpRequest) -> bool:
    """Whether the request carries `Authorization: Bearer <METRICS_TOKEN>` (never, with
    no METRICS_TOKEN set)."""
    token = getattr(settings, "METRICS_TOKEN", "")
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def metrics(request):
    if getattr(settings, "METRICS_TOKEN", "") and not holds_metrics_token(request):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
