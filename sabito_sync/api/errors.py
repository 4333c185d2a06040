"""The API's errors: the application's exceptions mapped to HTTP, and every error
body in one shape, `{"success": false, "message": ..., "errors": {...}}`."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from kombu.exceptions import OperationalError as BrokerUnavailable
from rest_framework import status
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..conf import SabitoSettingsError
from ..logs import LOG_PREFIX
from ..runs.result import SyncAlreadyRunning
from ..services.access import ActionRefused
from ..services.mappings import BusinessAlreadyMapped, NoSuchTenant, SyncIsRunning
from ..services.syncs import RunAlreadyFinished, SyncQueueUnavailable

logger = logging.getLogger("sabito_sync.api")


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class LengthRequired(APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_detail = "Send the body with a Content-Length header: a chunked body is not read."
    default_code = "length_required"


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is temporarily unavailable; try again later."
    default_code = "service_unavailable"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
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


def error_body(data: Any, *, is_validation: bool) -> dict[str, Any]:
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


def flat_messages(detail: Any) -> list[str]:
    if isinstance(detail, dict):
        return [f"{name}: {message}" for name, value in detail.items() for message in flat_messages(value)]
    if isinstance(detail, (list, tuple)):
        return [message for item in detail for message in flat_messages(item)]
    return [str(detail)]


def error_payload(message: str) -> dict[str, Any]:
    return {"success": False, "message": message, "errors": {}}
