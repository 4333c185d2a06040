"""The project's 404 and 500 handlers (`nexpro.urls`): under /api/ they answer in the
API's JSON error body, elsewhere with Django's pages."""

from django.http import HttpResponse
from django.views import defaults
from rest_framework.renderers import JSONRenderer

from sabito_sync.api.errors import error_payload

API_PREFIX = "/api/"


def not_found(request, exception=None):
    if request.path_info.startswith(API_PREFIX):
        message = "There is no API endpoint at this path."
        if request.path_info.endswith("/") and request.path_info != API_PREFIX:
            message += f" API paths have no trailing slash: try {request.path_info.rstrip('/')}"
        return json_error(message, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path_info.startswith(API_PREFIX):
        return json_error("Internal server error; the details are in the server's log.", status=500)
    return defaults.server_error(request)


def json_error(message: str, *, status: int) -> HttpResponse:
    # Rendered like every other API answer, byte for byte the same format.
    return HttpResponse(JSONRenderer().render(error_payload(message)), content_type="application/json", status=status)
