"""Reading a request: the JSON body, ids in the path, and the run history's paging."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response


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

    def get_paginated_response(self, data: Any) -> Response:
        page = self.page
        assert page is not None  # set by `paginate_queryset`, which the view calls first
        return Response(
            {
                "success": True,
                "count": page.paginator.count,
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


def path_uuid(name: str, raw: str, *, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError({name: [f"{raw[:100]!r} is not a valid {what} id; expected a UUID."]}) from None
