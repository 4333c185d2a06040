"""The OpenAPI declarations drf-spectacular builds the schema from: the security
scheme, strict request bodies, and what every tenant operation shares (the tenant
header and the error answers)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

from ..services.access import Action
from .permissions import TENANT_HEADER
from .serializers import ErrorResponseSerializer


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "sabito_sync.api.permissions.BearerTokenAuthentication"
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

    target_class = "sabito_sync.api.serializers.StrictInputSerializer"
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
        errors[411] = error_response("The body was chunked: send it with a Content-Length header.")
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
