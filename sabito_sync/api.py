"""The REST API of the guide's "API Endpoints" section: thin views over the sync
service, one view per URL, every queryset scoped to the tenant in `X-Tenant-ID`.

Errors of every kind (bad input, no token, another tenant's id, a sync already
running, a throttled caller) leave through `api_exception_handler` as one JSON
body: `{"success": false, "message": ..., "errors": {...}}`.
"""

from __future__ import annotations

import json
import logging
import uuid

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from kombu.exceptions import OperationalError as BrokerUnavailable
from rest_framework import status
from rest_framework.exceptions import (
    APIException,
    NotFound,
    ParseError,
    PermissionDenied,
    UnsupportedMediaType,
    ValidationError,
)
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from . import mappings as mapping_service
from .access import Action, ActionRefused
from .conf import SabitoSettingsError, load_sabito_settings
from .logs import LOG_PREFIX
from .mappings import BusinessAlreadyMapped, NoSuchTenant, RunAlreadyFinished, SyncIsRunning, SyncQueueUnavailable
from .models import SabitoMapping, SyncRun
from .permissions import TENANT_HEADER, ActionPermission, BearerTokenAuthentication, SyncTriggerThrottle, TenantPermission
from .serializers import (
    ErrorResponseSerializer,
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
    SyncRunSerializer,
    SyncStatusResponseSerializer,
    result_of_run,
    result_status,
    sync_run_result_data,
)
from .status import sync_status_json
from .sync import SyncAlreadyRunning, SyncResult, already_running_result

logger = logging.getLogger("sabito_sync.api")

SYNC_THROTTLE_SCOPE = "sabito_sync"

# --- Errors ------------------------------------------------------------------------------------


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is temporarily unavailable; try again later."
    default_code = "service_unavailable"


def api_exception_handler(exc, context):
    """DRF's handler with the application's own errors mapped to HTTP, and every
    error body in one shape. Anything unexpected still raises (and is logged) as a 500."""
    exc = as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = error_body(response.data, is_validation=isinstance(exc, ValidationError))
    return response


def as_api_exception(exc: Exception) -> Exception:
    if isinstance(exc, (SyncAlreadyRunning, SyncIsRunning, RunAlreadyFinished)):
        return Conflict(str(exc))
    if isinstance(exc, ActionRefused):
        return PermissionDenied(str(exc))
    if isinstance(exc, BusinessAlreadyMapped):
        return ValidationError({"sabitoBusinessId": [str(exc)]})
    if isinstance(exc, NoSuchTenant):
        return ValidationError({"tenantId": [str(exc)]})
    if isinstance(exc, RequestDataTooBig):
        # Django would answer an HTML 400 and log the traceback as a security event.
        return RequestTooLarge(
            f"Request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes are accepted."
        )
    if isinstance(exc, (BrokerUnavailable, SyncQueueUnavailable)):
        return ServiceUnavailable("Could not queue the sync: the task queue is unavailable. Try again later.")
    if isinstance(exc, SabitoSettingsError):
        # The problems name settings and their values: for the operator's log, not for API callers.
        logger.error("%s Sync requested over the API but the settings are invalid: %s", LOG_PREFIX, exc)
        return ServiceUnavailable("The Sabito sync is misconfigured on the server; an operator must fix its settings.")
    return exc


def error_body(data, *, is_validation: bool) -> dict:
    if is_validation:
        errors = data if isinstance(data, dict) else {"non_field_errors": data}
        errors = {str(name): flat_messages(messages) for name, messages in errors.items()}
        message = "; ".join(
            " ".join(messages) if name == "non_field_errors" else f"{name}: {' '.join(messages)}"
            for name, messages in errors.items()
        )
        return {"success": False, "message": message or "Invalid input.", "errors": errors}
    detail = data.get("detail") if isinstance(data, dict) and "detail" in data else data
    return {"success": False, "message": " ".join(flat_messages(detail)), "errors": {}}


def flat_messages(detail) -> list[str]:
    if isinstance(detail, dict):
        return [f"{name}: {message}" for name, value in detail.items() for message in flat_messages(value)]
    if isinstance(detail, (list, tuple)):
        return [message for item in detail for message in flat_messages(item)]
    return [str(detail)]


def error_payload(message: str) -> dict:
    return {"success": False, "message": message, "errors": {}}


# --- Request parsing and paging ---------------------------------------------------------------


class JSONBodyParser(JSONParser):
    """JSON whose nesting blows Python's recursion limit is malformed input (400),
    not a server error."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None


class RunHistoryPagination(PageNumberPagination):
    """`?page=` and `?pageSize=` (1 to 100); a malformed value is a 400, not
    silently replaced by the default."""

    page_size = 20
    page_size_query_param = "pageSize"
    max_page_size = 100

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        return positive_int_param(self.page_size_query_param, raw, maximum=self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        if (raw := request.query_params.get(self.page_query_param)) is not None:
            positive_int_param(self.page_query_param, raw)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        return Response(
            {
                "success": True,
                "count": self.page.paginator.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "data": data,
            }
        )


def positive_int_param(name: str, raw: str, *, maximum: int | None = None) -> int:
    value = int(raw) if raw.isascii() and raw.isdigit() else 0
    if value < 1 or (maximum is not None and value > maximum):
        upper = f" from 1 to {maximum}" if maximum is not None else " of at least 1"
        raise ValidationError({name: [f"Must be a whole number{upper}."]})
    return value


# --- OpenAPI ----------------------------------------------------------------------------------


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "sabito_sync.permissions.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A DRF token: `Authorization: Bearer <token>`. "
            "Create one with `manage.py drf_create_token <username>`.",
        }


class StrictInputSerializerScheme(OpenApiSerializerExtension):
    """Request bodies reject fields they do not declare: say so in the schema."""

    target_class = "sabito_sync.serializers.StrictInputSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        return {**auto_schema._map_basic_serializer(self.target, direction), "additionalProperties": False}


TENANT_HEADER_PARAMETER = OpenApiParameter(
    TENANT_HEADER,
    OpenApiTypes.UUID,
    OpenApiParameter.HEADER,
    required=True,
    description="The tenant to act for. The caller must be a member of it, or a platform operator (a user "
    "with a sabito_sync mapping permission; superusers): any tenant. Everything the request reads or changes "
    "is limited to this tenant.",
)
MAPPING_ID_PARAMETER = OpenApiParameter(
    "mappingId", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The mapping's id."
)
RUN_ID_PARAMETER = OpenApiParameter(
    "runId", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The run's id (a sync answer's runId)."
)


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorResponseSerializer, description=description)


def tenant_operation(
    *,
    operation_id: str,
    summary: str,
    tags: list[str],
    responses: dict,
    description: str = "",
    request=None,
    parameters: tuple = (),
    action: Action = Action.READ,
    mapping_in_path: bool = False,
    run_in_path: bool = False,
    throttled: bool = False,
    conflict: str | None = None,
):
    """`extend_schema` with what every operation shares: the tenant header and the
    error answers."""
    errors = {
        400: error_response(
            f"Missing or malformed {TENANT_HEADER} header"
            + (", malformed mapping id" if mapping_in_path else "")
            + (", malformed run id" if run_in_path else "")
            + (", or invalid body" if request is not None else "")
            + "."
        ),
        401: error_response("No token, an unknown token, or the token of a deactivated user."),
        403: error_response(f"Not a member of the tenant nor a platform operator, or: {action.value.refusal}"),
    }
    if mapping_in_path:
        errors[404] = error_response("No mapping with this id in this tenant (another tenant's id answers the same).")
    if run_in_path:
        errors[404] = error_response("No run with this id in this tenant (another tenant's id answers the same).")
    if conflict:
        errors[409] = error_response(conflict)
    if request is not None:
        errors[415] = error_response("The body is not JSON (send Content-Type: application/json).")
    if throttled:
        errors[429] = error_response("Too many sync requests; retry after the Retry-After header's seconds.")
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        description=description,
        tags=tags,
        request=request,
        parameters=[
            TENANT_HEADER_PARAMETER,
            *([MAPPING_ID_PARAMETER] if mapping_in_path else []),
            *([RUN_ID_PARAMETER] if run_in_path else []),
            *parameters,
        ],
        responses={**responses, **errors},
    )


def path_uuid(name: str, raw: str, *, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError({name: [f"{raw[:100]!r} is not a valid {what} id; expected a UUID."]}) from None


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

    def tenant_mappings(self):
        return SabitoMapping.objects.filter(tenant=self.request.tenant).select_related("tenant")

    def get_mapping(self, mapping_id: str) -> SabitoMapping:
        mapping = self.tenant_mappings().filter(pk=path_uuid("mappingId", mapping_id, what="mapping")).first()
        if mapping is None:
            # Exactly the answer for an id that exists in another tenant: ids cannot be probed.
            raise NotFound("Sabito mapping not found.")
        return mapping

    def get_exception_handler(self):
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

    def input_data(self):
        """The JSON body; a body sent without a Content-Type would otherwise be
        ignored silently (DRF then reads it as empty) and the defaults would run."""
        if not self.request.content_type and int(self.request.META.get("CONTENT_LENGTH") or 0) > 0:
            raise UnsupportedMediaType("", detail="Send the body as JSON, with Content-Type: application/json.")
        return self.request.data


SYNC_DESCRIPTION = (
    "Queues the syncs on the workers (never runs one in the web process), then waits for them up to "
    "`SABITO_SYNC_API_WAIT` seconds (default 20). All finished: 200 with one result per mapping. Not all "
    "finished: 202 with each run's id and a URL to poll (GET /api/sabito/runs/{runId}); the message says "
    "when no worker has picked a run up. `\"async\": true` answers that 202 at once. Rate limited per user "
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
    def post(self, request):
        full_sync, run_async = self.sync_options()
        mappings = list(self.tenant_mappings().filter(is_active=True))
        return sync_answer(request, mappings, full_sync=full_sync, run_async=run_async)


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
    def post(self, request, mappingId):
        mapping = self.get_mapping(mappingId)
        full_sync, run_async = self.sync_options()
        return sync_answer(request, [mapping], full_sync=full_sync, run_async=run_async, refuse_running=True)


def sync_answer(
    request, mappings: list[SabitoMapping], *, full_sync: bool, run_async: bool, refuse_running: bool = False
) -> Response:
    """Queue the syncs and wait for them (`SABITO_SYNC_API_WAIT`; not at all when
    `run_async`). A mapping already syncing is not queued again: a 409 when it is the
    only one asked for (`refuse_running`), an "already running" item otherwise."""
    wait = 0.0 if run_async else load_sabito_settings().api_wait_seconds
    outcome = mapping_service.request_sync(
        actor=request.user, mappings=mappings, full_sync=full_sync, trigger=SyncRun.Trigger.API
    )
    refusals = already_running_refusals(outcome.already_running)
    if refuse_running and refusals:
        raise refusals[0]
    task_ids = {item.run.pk: item.task_id for item in outcome.queued}
    runs = [item.run for item in outcome.queued]
    if not run_async:
        runs = mapping_service.wait_for_runs(runs=runs, timeout=wait)
    run_of = {run.mapping_id: run for run in runs}
    refusal_of = {refusal.mapping.pk: refusal for refusal in refusals}
    if not run_async and all(run.status in SyncRun.FINISHED_STATUSES for run in runs):
        results = [
            result_of_run(run_of[mapping.pk]) if mapping.pk in run_of else already_running_result(refusal_of[mapping.pk])
            for mapping in mappings
        ]
        return finished_response(results)
    items = [pending_item(request, mapping, run_of.get(mapping.pk), task_ids) for mapping in mappings]
    return Response(
        {"success": True, "message": pending_message(runs, refusals, waited=wait), "data": items},
        status=status.HTTP_202_ACCEPTED,
    )


def already_running_refusals(mappings: list[SabitoMapping]) -> list[SyncAlreadyRunning]:
    """Why each of `mappings` was not queued, naming the run holding it."""
    holders = {run.mapping_id: run for run in mapping_service.live_runs().filter(mapping__in=mappings)}
    return [SyncAlreadyRunning(mapping, holders.get(mapping.pk)) for mapping in mappings]


# How the message names the mappings that neither succeeded nor failed.
NOT_COMPLETED = {
    SyncRun.Status.ALREADY_RUNNING: "already running, so not started again",
    SyncRun.Status.CANCELLED: "cancelled",
    SyncRun.Status.INTERRUPTED: "interrupted by a worker shutting down, to resume in a new run",
}


def finished_response(results: list[SyncResult]) -> Response:
    """The guide's answer: "Sync completed", with failures counted. A mapping that
    was already syncing, or a run cancelled or interrupted, is not a failure: the
    message names it."""
    statuses = [result_status(result) for result in results]
    failed = statuses.count(SyncRun.Status.FAILED)
    message = "Sync completed"
    if failed:
        plural = "" if len(results) == 1 else "s"
        message = f"Sync completed with failures for {failed} of {len(results)} mapping{plural}"
    for run_status, label in NOT_COMPLETED.items():
        names = [result.business_name for result, of in zip(results, statuses) if of == run_status]
        if names:
            message += f"; {label}: {', '.join(names)}"
    data = [sync_run_result_data(result) for result in results]
    return Response({"success": not failed, "message": message, "data": data})


def pending_item(request, mapping: SabitoMapping, run: SyncRun | None, task_ids: dict) -> dict:
    item = {
        "mappingId": str(mapping.pk),
        "businessId": mapping.sabito_business_id,
        "runId": str(run.pk) if run else None,
        "taskId": task_ids.get(run.pk) if run else None,
        "status": run.status if run else SyncRun.Status.ALREADY_RUNNING,
        "url": request.build_absolute_uri(reverse("sabito_sync:run-detail", args=[run.pk])) if run else None,
    }
    if run is None:
        item["alreadyRunning"] = True
    return item


def pending_message(runs: list[SyncRun], refusals: list[SyncAlreadyRunning], *, waited: float) -> str:
    unfinished = [run for run in runs if run.status not in SyncRun.FINISHED_STATUSES]
    if waited:
        message = (
            f"Sync queued; {len(unfinished)} of {len(runs)} run{'' if len(runs) == 1 else 's'} not finished after "
            f"{waited:g} s. Poll each run's url for its progress and result."
        )
    else:
        message = "Sync queued. Poll each run's url for its progress and result."
    waiting = [run.mapping.business_name for run in runs if run.status == SyncRun.Status.QUEUED]
    if waited and waiting:
        message += (
            f" No worker has picked up {', '.join(waiting)} within {waited:g} s: is a Celery worker running "
            "(and not busy with other syncs)?"
        )
    if refusals:
        names = ", ".join(refusal.mapping.business_name for refusal in refusals)
        message += f" Not queued, a sync is already running: {names}."
    return message


class SyncStatusApi(TenantAPIView):
    actions_by_method = {"GET": Action.READ}

    @tenant_operation(
        operation_id="sync_status",
        summary="Sync status of the tenant's mappings",
        description="Every mapping of the tenant, active or not, with its latest sync and whether one is running.",
        tags=["sync"],
        responses={200: SyncStatusResponseSerializer},
    )
    def get(self, request):
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
    def get(self, request):
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
    def post(self, request):
        params = MappingCreateInputSerializer(data=self.input_data())
        params.is_valid(raise_exception=True)
        mapping = mapping_service.create_mapping(actor=request.user, tenant=request.tenant, **params.validated_data)
        return Response({"success": True, "data": MappingSerializer(mapping).data}, status=status.HTTP_201_CREATED)


class MappingDetailApi(TenantAPIView):
    # PATCH: the service checks each change (renaming and pausing are the tenant
    # admins', re-pointing the operators').
    actions_by_method = {"GET": Action.READ, "DELETE": Action.DELETE}

    @tenant_operation(
        operation_id="mappings_retrieve",
        summary="One mapping of the tenant",
        tags=["mappings"],
        responses={200: MappingResponseSerializer},
        mapping_in_path=True,
    )
    def get(self, request, mappingId):
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
    def patch(self, request, mappingId):
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
    def delete(self, request, mappingId):
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
    def get(self, request, mappingId):
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
    def get(self, request, runId):
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
    def post(self, request, runId):
        run = mapping_service.cancel_run(actor=request.user, run=self.get_run(runId))
        if run.status == SyncRun.Status.CANCELLED:
            message = "Run cancelled before a worker started it."
        else:
            message = "Cancel requested: the run stops once the pages it has fetched are written."
        return Response(
            {"success": True, "message": message, "data": SyncRunSerializer(run).data}, status=status.HTTP_202_ACCEPTED
        )
