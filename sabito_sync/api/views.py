"""The REST API of the guide's "API Endpoints" section: one view per URL, each parsing
its input, making one service call and rendering the answer; every queryset scoped
to the tenant in `X-Tenant-ID`. Errors leave through `errors.api_exception_handler`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import NotFound, UnsupportedMediaType
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import SabitoMapping, SabitoMappingQuerySet, SyncRun
from ..services import mappings as mapping_service
from ..services import syncs as sync_service
from ..services.access import Action
from ..services.status import sync_status_json
from .errors import LengthRequired, api_exception_handler
from .parsing import JSONBodyParser, RunHistoryPagination, path_uuid
from .permissions import (
    ActionPermission,
    BearerTokenAuthentication,
    SyncTriggerThrottle,
    TenantPermission,
    TenantRequest,
)
from .schema import error_response, tenant_operation
from .serializers import (
    MappingCreateInputSerializer,
    MappingListResponseSerializer,
    MappingResponseSerializer,
    MappingSerializer,
    MappingUpdateInputSerializer,
    MessageResponseSerializer,
    SyncInputSerializer,
    SyncQueuedResponseSerializer,
    SyncResponseSerializer,
    SyncRunCancelResponseSerializer,
    SyncRunPageResponseSerializer,
    SyncRunResponseSerializer,
    SyncRunResultSerializer,
    SyncRunSerializer,
    SyncStatusResponseSerializer,
)

SYNC_THROTTLE_SCOPE = "sabito_sync"


# --- Views ------------------------------------------------------------------------------------


# Authenticated and tenant-scoped: `TenantPermission` sets `request.tenant` before
# any handler runs. The view carries all of its DRF wiring (Bearer tokens, JSON in and
# out, no throttle but the sync triggers' own, the one error body), so that the host
# project's REST_FRAMEWORK settings, or their absence, do not change the answers.
# (A comment: a docstring would become every operation's description.)
class TenantAPIView(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [IsAuthenticated, TenantPermission, ActionPermission]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONBodyParser]
    throttle_classes = []
    # The `access.Action` each method needs, checked by `ActionPermission`.
    actions_by_method: dict[str, Action] = {}
    # What the handlers see once the permissions have let the request in.
    request: TenantRequest

    def tenant_mappings(self) -> SabitoMappingQuerySet:
        return SabitoMapping.objects.filter(tenant=self.request.tenant).select_related("tenant")

    def get_mapping(self, mapping_id: str) -> SabitoMapping:
        mapping = self.tenant_mappings().filter(pk=path_uuid("mappingId", mapping_id, what="mapping")).first()
        if mapping is None:
            # Exactly the answer for an id that exists in another tenant: ids cannot be probed.
            raise NotFound("Sabito mapping not found.")
        return mapping

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return api_exception_handler

    def get_run(self, run_id: str) -> SyncRun:
        run = (
            SyncRun.objects.filter(pk=path_uuid("runId", run_id, what="run"), mapping__tenant=self.request.tenant)
            .select_related("mapping__tenant")
            .first()
        )
        if run is None:
            # Another tenant's run answers exactly like a missing one.
            raise NotFound("Sync run not found.")
        return run

    def input_data(self) -> Any:
        """The JSON body. A body sent without a Content-Type, or chunked without a
        Content-Length, would otherwise read as empty and the defaults would run."""
        if "chunked" in self.request.headers.get("transfer-encoding", "").lower() and not self.request.headers.get(
            "content-length"
        ):
            raise LengthRequired()
        if not self.request.content_type and int(self.request.headers.get("content-length") or 0) > 0:
            raise UnsupportedMediaType("", detail="Send the body as JSON, with Content-Type: application/json.")
        return self.request.data


SYNC_DESCRIPTION = (
    "Queues the syncs on the workers (never runs one in the web process), then waits for them up to "
    "`SABITO_SYNC_API_WAIT` seconds (default 20). All finished: 200 with one result per mapping. Not all "
    "finished: 202 with each run's id and a URL to poll (GET /api/sabito/runs/{runId}); the message says "
    'when no worker has picked a run up. `"async": true` answers that 202 at once. Rate limited per user '
    "(`SABITO_SYNC_THROTTLE`, default 30/minute)."
)


class SyncTriggerApi(TenantAPIView):
    """The endpoints that start syncs: tenant admins and operators, rate limited."""

    actions_by_method = {"POST": Action.MANAGE}
    throttle_classes = [SyncTriggerThrottle]
    throttle_scope = SYNC_THROTTLE_SCOPE

    def sync_options(self) -> tuple[bool, bool]:
        """(full_sync, run_async) from the validated body."""
        params = SyncInputSerializer(data=self.input_data())
        params.is_valid(raise_exception=True)
        return params.validated_data["full_sync"], params.validated_data["run_async"]


SYNC_RESPONSES = {
    202: OpenApiResponse(
        SyncQueuedResponseSerializer,
        description='Queued, and not all finished within SABITO_SYNC_API_WAIT seconds (or "async": true): poll '
        "each run's url.",
    ),
    503: error_response("The task queue is unavailable, or the sync is misconfigured on the server."),
}


class SyncAllApi(SyncTriggerApi):
    @tenant_operation(
        operation_id="sync_all",
        summary="Sync all of the tenant's active mappings",
        description=SYNC_DESCRIPTION
        + " Only active mappings are synced. `success` is false, and the message says how many failed, if any "
        "mapping's sync failed; each item has its own `success` and, when false, `error`. A mapping whose sync "
        "was already running is an item with `alreadyRunning: true`, named in the message and not counted as a "
        "failure; cancelled and interrupted runs are named there too.",
        tags=["sync"],
        request=SyncInputSerializer,
        responses={
            200: OpenApiResponse(SyncResponseSerializer, description="Every sync finished; one result per mapping."),
            **SYNC_RESPONSES,
        },
        action=Action.MANAGE,
        throttled=True,
    )
    def post(self, request: TenantRequest) -> Response:
        full_sync, run_async = self.sync_options()
        answer = sync_service.trigger_syncs(
            actor=request.user,
            mappings=list(self.tenant_mappings().active()),
            full_sync=full_sync,
            trigger=SyncRun.Trigger.API,
            run_async=run_async,
        )
        return sync_response(request, answer)


class SyncMappingApi(SyncTriggerApi):
    @tenant_operation(
        operation_id="sync_mapping",
        summary="Sync one mapping",
        description=SYNC_DESCRIPTION
        + " An inactive mapping is synced too when named here explicitly. `data` is a list of one item.",
        tags=["sync"],
        request=SyncInputSerializer,
        responses={
            200: OpenApiResponse(SyncResponseSerializer, description="The sync finished (successfully or not)."),
            **SYNC_RESPONSES,
        },
        action=Action.MANAGE,
        mapping_in_path=True,
        throttled=True,
        conflict="A sync of this mapping is already running.",
    )
    def post(self, request: TenantRequest, mappingId: str) -> Response:
        mapping = self.get_mapping(mappingId)
        full_sync, run_async = self.sync_options()
        answer = sync_service.trigger_syncs(
            actor=request.user,
            mappings=[mapping],
            full_sync=full_sync,
            trigger=SyncRun.Trigger.API,
            run_async=run_async,
            refuse_running=True,
        )
        return sync_response(request, answer)


def sync_response(request: Request, answer: sync_service.SyncAnswer) -> Response:
    """A sync trigger's answer: 200 with one result per mapping once every run has
    finished, else 202 with each run to poll."""
    if answer.finished:
        data = SyncRunResultSerializer(answer.results, many=True).data
        return Response({"success": answer.success, "message": answer.message, "data": data})
    items = [pending_item(request, pending) for pending in answer.pending]
    return Response({"success": True, "message": answer.message, "data": items}, status=status.HTTP_202_ACCEPTED)


def pending_item(request: Request, pending: sync_service.PendingSync) -> dict[str, Any]:
    mapping, run = pending.mapping, pending.run
    # Not queued: the run holding the mapping is the one to follow.
    shown = run or pending.held_by
    item: dict[str, Any] = {
        "mappingId": str(mapping.pk),
        "businessId": mapping.sabito_business_id,
        "runId": str(shown.pk) if shown else None,
        "taskId": pending.task_id,
        "status": run.status if run else SyncRun.Status.ALREADY_RUNNING,
        "url": request.build_absolute_uri(reverse("sabito_sync:run-detail", args=[shown.pk])) if shown else None,
    }
    if run is None:
        item["alreadyRunning"] = True
    return item


class SyncStatusApi(TenantAPIView):
    actions_by_method = {"GET": Action.READ}

    @tenant_operation(
        operation_id="sync_status",
        summary="Sync status of the tenant's mappings",
        description="Every mapping of the tenant, active or not, with its latest sync and whether one is running.",
        tags=["sync"],
        responses={200: SyncStatusResponseSerializer},
    )
    def get(self, request: TenantRequest) -> HttpResponse:
        body = sync_status_json(tenant=request.tenant)
        if isinstance(request.accepted_renderer, JSONRenderer):
            return HttpResponse(body, content_type="application/json")
        return Response(json.loads(body))  # the browsable API (DEBUG)


class MappingListApi(TenantAPIView):
    actions_by_method = {"GET": Action.READ, "POST": Action.CONNECT}

    @tenant_operation(
        operation_id="mappings_list",
        summary="List the tenant's mappings",
        tags=["mappings"],
        responses={200: MappingListResponseSerializer},
    )
    def get(self, request: TenantRequest) -> Response:
        return Response({"success": True, "data": MappingSerializer(self.tenant_mappings(), many=True).data})

    @tenant_operation(
        operation_id="mappings_create",
        summary="Connect a Sabito business to the tenant (platform operators)",
        description="Needs the sabito_sync.add_sabitomapping permission (superusers have it); no tenant role is "
        "enough, since one Sabito API key reads every business. The operator needs no membership of the tenant. "
        "A Sabito business can be mapped to one tenant only.",
        tags=["mappings"],
        request=MappingCreateInputSerializer,
        responses={201: MappingResponseSerializer},
        action=Action.CONNECT,
    )
    def post(self, request: TenantRequest) -> Response:
        params = MappingCreateInputSerializer(data=self.input_data())
        params.is_valid(raise_exception=True)
        mapping = mapping_service.create_mapping(actor=request.user, tenant=request.tenant, **params.validated_data)
        return Response({"success": True, "data": MappingSerializer(mapping).data}, status=status.HTTP_201_CREATED)


class MappingDetailApi(TenantAPIView):
    # PATCH needs MANAGE before its body is read, whatever it holds; the service then
    # checks each change (re-pointing is the operators' alone).
    actions_by_method = {"GET": Action.READ, "PATCH": Action.MANAGE, "DELETE": Action.DELETE}

    @tenant_operation(
        operation_id="mappings_retrieve",
        summary="One mapping of the tenant",
        tags=["mappings"],
        responses={200: MappingResponseSerializer},
        mapping_in_path=True,
    )
    def get(self, request: TenantRequest, mappingId: str) -> Response:
        return Response({"success": True, "data": MappingSerializer(self.get_mapping(mappingId)).data})

    @tenant_operation(
        operation_id="mappings_update",
        summary="Rename, pause or resume a mapping (tenant admins); re-point it (platform operators)",
        description="Tenant admins (and operators with sabito_sync.change_sabitomapping) may change "
        "`businessName` and `isActive`. Changing `sabitoBusinessId` or `tenantId` needs that permission: it "
        "resets the incremental watermark, so the next sync fetches every customer, and is refused while a sync "
        "of the mapping runs.",
        tags=["mappings"],
        request=MappingUpdateInputSerializer,
        responses={200: MappingResponseSerializer},
        action=Action.MANAGE,
        mapping_in_path=True,
        conflict="A sync of this mapping is running (re-pointing only).",
    )
    def patch(self, request: TenantRequest, mappingId: str) -> Response:
        mapping = self.get_mapping(mappingId)
        params = MappingUpdateInputSerializer(data=self.input_data())
        params.is_valid(raise_exception=True)
        mapping = mapping_service.update_mapping(actor=request.user, mapping=mapping, **params.validated_data)
        return Response({"success": True, "data": MappingSerializer(mapping).data})

    @tenant_operation(
        operation_id="mappings_delete",
        summary="Delete a mapping and its run history (platform operators)",
        description="Needs the sabito_sync.delete_sabitomapping permission. Customers already synced stay in the "
        "tenant. Refused while a sync of the mapping is running.",
        tags=["mappings"],
        responses={200: MessageResponseSerializer},
        action=Action.DELETE,
        mapping_in_path=True,
        conflict="A sync of this mapping is running.",
    )
    def delete(self, request: TenantRequest, mappingId: str) -> Response:
        mapping_service.delete_mapping(actor=request.user, mapping=self.get_mapping(mappingId))
        return Response({"success": True, "message": "Mapping deleted"})


class MappingRunsApi(TenantAPIView):
    actions_by_method = {"GET": Action.READ}
    pagination_class = RunHistoryPagination

    @tenant_operation(
        operation_id="mapping_runs_list",
        summary="A mapping's sync history, newest first",
        tags=["mappings"],
        responses={200: SyncRunPageResponseSerializer},
        mapping_in_path=True,
        parameters=(
            OpenApiParameter(
                "page",
                {"type": "integer", "minimum": 1},
                OpenApiParameter.QUERY,
                description="Page number, from 1. A page past the last answers 404.",
            ),
            OpenApiParameter(
                "pageSize",
                {"type": "integer", "minimum": 1, "maximum": RunHistoryPagination.max_page_size},
                OpenApiParameter.QUERY,
                description="Runs per page (default 20).",
            ),
        ),
    )
    def get(self, request: TenantRequest, mappingId: str) -> Response:
        mapping = self.get_mapping(mappingId)
        paginator = self.pagination_class()
        runs = paginator.paginate_queryset(mapping.runs.order_by("-started_at", "-pk"), request, view=self)
        return paginator.get_paginated_response(SyncRunSerializer(runs, many=True).data)


class RunDetailApi(TenantAPIView):
    actions_by_method = {"GET": Action.READ}

    @tenant_operation(
        operation_id="runs_retrieve",
        summary="One sync run: its status and counters so far",
        description="Poll this after a sync answered 202. `status` is queued (no worker has started it yet), "
        "running, or how it ended; the counters and `pagesDone` grow while it runs.",
        tags=["runs"],
        responses={200: SyncRunResponseSerializer},
        run_in_path=True,
    )
    def get(self, request: TenantRequest, runId: str) -> Response:
        return Response({"success": True, "data": SyncRunSerializer(self.get_run(runId)).data})


class RunCancelApi(TenantAPIView):
    actions_by_method = {"POST": Action.MANAGE}

    @tenant_operation(
        operation_id="runs_cancel",
        summary="Cancel a queued or running sync run",
        description="A queued run is cancelled at once and never starts. A running one stops once the pages it has "
        "fetched are written and is recorded cancelled; what it wrote stays and the incremental watermark does not move "
        "(`cancelRequested` is true meanwhile). Asking again is harmless.",
        tags=["runs"],
        responses={202: SyncRunCancelResponseSerializer},
        action=Action.MANAGE,
        run_in_path=True,
        conflict="The run has already finished.",
    )
    def post(self, request: TenantRequest, runId: str) -> Response:
        run = sync_service.cancel_run(actor=request.user, run=self.get_run(runId))
        if run.status == SyncRun.Status.CANCELLED:
            message = "Run cancelled before a worker started it."
        else:
            message = "Cancel requested: the run stops once the pages it has fetched are written."
        return Response(
            {"success": True, "message": message, "data": SyncRunSerializer(run).data}, status=status.HTTP_202_ACCEPTED
        )
