"""The API's request and response shapes, camelCase as in the guide.

Input serializers are strict: JSON booleans only, strings only, and a field the
API does not know is an error rather than silently ignored, so a typo such as
`"fulSync": true` cannot quietly run an incremental sync. Output serializers exist
once per shape and also describe it in the OpenAPI schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import metadata
from ..models import CONTROL_CHARACTERS, SabitoMapping, SyncRun
from ..runs.result import SyncResult, result_data

# A field named `errors` or `data` (the API's own keys) has a `type: ignore[assignment]`:
# the stubs take it for an override of `Serializer.errors` or `.data`, but DRF's
# SerializerMetaclass moves declared fields out of the class namespace (into
# `_declared_fields`), so those properties stay as they are
# (typeddjango/djangorestframework-stubs#78).

# --- Strict input ------------------------------------------------------------------------


class StrictBooleanField(serializers.BooleanField):
    """Only JSON `true` / `false`: DRF's own field would also take "yes", 1 or "false"."""

    default_error_messages = {
        "invalid": "Must be a JSON boolean: true or false.",
        "null": "Must be a JSON boolean: true or false.",
    }

    def to_internal_value(self, data: Any) -> bool:
        if data is True or data is False:
            return data
        self.fail("invalid")


class WholeStringRegexValidator(RegexValidator):
    """A RegexValidator whose pattern must match the whole string: Python's `$` also
    matches before a final newline, the schema's (ECMAScript's) does not, and the server
    and the schema must agree."""

    def __call__(self, value: Any) -> None:
        pattern = re.compile(self.regex) if isinstance(self.regex, str) else self.regex
        if pattern.fullmatch(str(value)) is None:
            raise DjangoValidationError(self.message, code=self.code, params={"value": value})


class StrictCharField(serializers.CharField):
    """Only JSON strings (DRF's own field would turn 123 into "123"), with no control
    character (NUL PostgreSQL cannot store; CR, LF or ESC would forge a log line) and
    no whitespace at either end.

    The rule is a regex rather than trimming so the schema can state it exactly:
    trimming would accept strings the schema calls too long or blank."""

    default_error_messages = {"invalid": "Must be a JSON string."}
    # Whitespace spelled out rather than `\s`: Python's and the schema's (ECMAScript's)
    # `\s` differ (\x1c-\x1f and \x85 in one, \ufeff in the other), and the server and
    # the schema must agree on every string. Control characters count as blank too.
    BLANK = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
    TEXT_PATTERN = rf"^[^{BLANK}]([^{CONTROL_CHARACTERS}]*[^{BLANK}])?$"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(
            WholeStringRegexValidator(
                self.TEXT_PATTERN,
                message="Must not be blank, start or end with whitespace, or contain control characters "
                "(NUL, line breaks, tabs, escape codes).",
            )
        )

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# Rejects fields it does not declare. (A comment, not a docstring, on this base:
# drf-spectacular would show a docstring in every subclass's schema.)
# A body of many thousand keys (a few MB) is refused by its count before any of them
# is looked at, and an error names a few unknown fields, not all: either answer
# costs milliseconds and stays small whatever the body holds.
class StrictInputSerializer(serializers.Serializer):
    MAX_FIELDS = 50
    MAX_NAMED_UNKNOWN = 10

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            if len(data) > self.MAX_FIELDS:
                raise serializers.ValidationError(
                    {"non_field_errors": [f"The body has {len(data)} fields; at most {self.MAX_FIELDS} are accepted."]}
                )
            unknown = sorted(name for name in data if name not in self.fields)
            if unknown:
                errors: dict[str, list[str]] = {name: ["Unknown field."] for name in unknown[: self.MAX_NAMED_UNKNOWN]}
                if len(unknown) > self.MAX_NAMED_UNKNOWN:
                    more = len(unknown) - self.MAX_NAMED_UNKNOWN
                    errors["non_field_errors"] = [f"And {more} more unknown fields."]
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class SyncInputSerializer(StrictInputSerializer):
    fullSync = StrictBooleanField(
        source="full_sync",
        required=False,
        default=False,
        help_text="false (default) = incremental, only customers updated since the last successful sync; "
        "true = every customer.",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # "async" is a Python keyword, so it cannot be declared as a class attribute.
        fields["async"] = StrictBooleanField(
            source="run_async",
            required=False,
            default=False,
            help_text="true = queue the sync on the task queue and answer 202 at once with the task ids "
            "instead of waiting for it to finish.",
        )
        return fields


class MappingCreateInputSerializer(StrictInputSerializer):
    sabitoBusinessId = StrictCharField(
        source="sabito_business_id",
        max_length=100,
        help_text="Sabito's business id. One business maps to one tenant only.",
    )
    businessName = StrictCharField(source="business_name", max_length=200)
    isActive = StrictBooleanField(
        source="is_active",
        required=False,
        default=True,
        help_text="Inactive mappings are left out of scheduled and sync-all runs.",
    )


class MappingUpdateInputSerializer(StrictInputSerializer):
    businessName = StrictCharField(source="business_name", max_length=200, required=False)
    isActive = StrictBooleanField(
        source="is_active",
        required=False,
        help_text="false pauses the mapping (left out of scheduled and sync-all runs); true resumes it.",
    )
    sabitoBusinessId = StrictCharField(
        source="sabito_business_id",
        max_length=100,
        required=False,
        help_text="Platform operators only: re-point the mapping at another Sabito business. Resets the "
        "incremental watermark, so the next sync fetches every customer. Refused while a sync runs.",
    )
    tenantId = serializers.UUIDField(
        source="tenant_id",
        required=False,
        help_text="Platform operators only: move the mapping to another tenant. Customers already synced stay "
        "in the old tenant; the watermark is reset. Refused while a sync runs.",
    )


# --- Sync results ---------------------------------------------------------------------------


class SyncErrorDetailSerializer(serializers.Serializer):
    sabitoCustomerId = serializers.CharField(allow_null=True)
    email = serializers.CharField(allow_null=True)
    reason = serializers.CharField()


class SyncResultSerializer(serializers.Serializer):
    """One mapping's sync result."""

    success = serializers.BooleanField()
    businessId = serializers.CharField(source="business_id")
    customersProcessed = serializers.IntegerField(source="processed")
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    skipped = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="Records that could not be synced; see errorDetails.")  # type: ignore[assignment]
    errorDetails = SyncErrorDetailSerializer(source="error_details", many=True)
    markedMissing = serializers.IntegerField(
        source="marked_missing",
        required=False,
        help_text="Present only when non-zero, after a complete full sync: customers linked to this business "
        "that Sabito no longer returned, now marked missing (kept, not deleted).",
    )
    error = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="Present only when success is false: why the mapping's sync failed or did not start.",
    )

    def to_representation(self, result: SyncResult) -> dict[str, Any]:
        # One rendering of a result for the API, the tasks and the command: the
        # fields above declare its schema.
        return result_data(result)


class SyncRunResultSerializer(SyncResultSerializer):
    """One mapping's finished sync: the guide's result, plus its run."""

    runId = serializers.UUIDField(
        source="run_id",
        allow_null=True,
        help_text="The run (GET /api/sabito/runs/{runId}); null for a mapping not started because a sync of it "
        "was already running.",
    )
    status = serializers.SerializerMethodField(
        help_text="How the run ended: succeeded, failed, cancelled, interrupted (its worker stopped; the sync "
        "resumes in a new run) or already_running (not started: another run held the mapping)."
    )
    alreadyRunning = serializers.BooleanField(
        source="already_running",
        required=False,
        help_text="Present (true) only when the mapping was not synced because a sync of it was already running: "
        "not counted as a failure.",
    )

    @extend_schema_field(serializers.ChoiceField(choices=SyncRun.Status.choices))
    def get_status(self, result: SyncResult) -> str:
        return result.status

    def to_representation(self, result: SyncResult) -> dict[str, Any]:
        data = {**result_data(result), "runId": result.run_id, "status": result.status}
        if result.already_running:
            data["alreadyRunning"] = True
        return data


class PendingSyncSerializer(serializers.Serializer):
    mappingId = serializers.UUIDField()
    businessId = serializers.CharField()
    runId = serializers.UUIDField(
        allow_null=True, help_text="The run to follow; null when a sync of the mapping was already running."
    )
    taskId = serializers.CharField(allow_null=True, help_text="The Celery task id; null when nothing was queued.")
    status = serializers.ChoiceField(choices=SyncRun.Status.choices, help_text="The run's status when answering.")
    url = serializers.URLField(allow_null=True, help_text="Poll this for the run's progress and result.")
    alreadyRunning = serializers.BooleanField(
        required=False,
        help_text="Present (true) only when nothing was queued because a sync of it was already running.",
    )


class LastSyncResultSerializer(serializers.Serializer):
    """The summary of the mapping's latest run."""

    success = serializers.BooleanField(required=False)
    fullSync = serializers.BooleanField(required=False)
    customersProcessed = serializers.IntegerField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    skipped = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    syncedAt = serializers.DateTimeField()
    error = serializers.CharField(required=False, allow_null=True)


# --- Mappings -------------------------------------------------------------------------------


# The sync state kept in `SabitoMapping.metadata`, read defensively: the admin
# lets an operator edit that JSON by hand.
class MappingMetadataFieldsMixin(serializers.Serializer):
    lastSyncAt = serializers.SerializerMethodField(
        help_text="The incremental watermark: the next incremental sync asks Sabito for customers updated "
        "after this moment. Null until the first successful sync."
    )
    lastSyncResult = serializers.SerializerMethodField(help_text="The latest run's summary, successful or not.")

    # Subclasses list every field here: the mixin's fields would otherwise come first.
    field_order: tuple[str, ...] = ()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        return {name: fields[name] for name in self.field_order} if self.field_order else fields

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_lastSyncAt(self, mapping: SabitoMapping) -> str | None:
        return metadata.watermark_text(mapping.metadata)

    @extend_schema_field(LastSyncResultSerializer(allow_null=True))
    def get_lastSyncResult(self, mapping: SabitoMapping) -> dict[str, Any] | None:
        return metadata.last_sync_result(mapping.metadata)


class SyncStatusSerializer(MappingMetadataFieldsMixin):
    id = serializers.UUIDField()
    sabitoBusinessId = serializers.CharField(source="sabito_business_id")
    businessName = serializers.CharField(source="business_name")
    tenantName = serializers.CharField(source="tenant.name")
    lastUpdated = serializers.DateTimeField(source="updated_at")
    syncRunning = serializers.BooleanField(source="sync_running", help_text="Whether a sync of it is running now.")
    isActive = serializers.BooleanField(source="is_active")

    # The guide's order, then ours.
    field_order = (
        "id",
        "sabitoBusinessId",
        "businessName",
        "tenantName",
        "lastSyncAt",
        "lastSyncResult",
        "lastUpdated",
        "syncRunning",
        "isActive",
    )


class MappingSerializer(MappingMetadataFieldsMixin):
    id = serializers.UUIDField()
    sabitoBusinessId = serializers.CharField(source="sabito_business_id")
    businessName = serializers.CharField(source="business_name")
    tenantId = serializers.UUIDField(source="tenant_id")
    tenantName = serializers.CharField(source="tenant.name")
    isActive = serializers.BooleanField(source="is_active")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    field_order = (
        "id",
        "sabitoBusinessId",
        "businessName",
        "tenantId",
        "tenantName",
        "isActive",
        "lastSyncAt",
        "lastSyncResult",
        "createdAt",
        "updatedAt",
    )


class SyncRunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    mappingId = serializers.UUIDField(source="mapping_id")
    fullSync = serializers.BooleanField(source="full_sync")
    trigger = serializers.ChoiceField(choices=SyncRun.Trigger.choices)
    status = serializers.ChoiceField(choices=SyncRun.Status.choices)
    startedAt = serializers.DateTimeField(source="started_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    updatedAfter = serializers.DateTimeField(
        source="updated_after", allow_null=True, help_text="The watermark this run asked Sabito for; null = full."
    )
    customersProcessed = serializers.IntegerField(source="customers_processed")
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    skipped = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    markedMissing = serializers.IntegerField(
        source="marked_missing", help_text="Customers this (full) run found gone from Sabito and marked missing."
    )
    pagesDone = serializers.IntegerField(source="pages_done", help_text="Pages fetched and written so far.")
    cancelRequested = serializers.SerializerMethodField(
        help_text="Whether a cancel was asked for; a running run stops once the pages it has fetched are written."
    )
    errorDetails = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField(help_text="Why the run failed or did not start; null if it did not.")
    note = serializers.SerializerMethodField(
        help_text="Why the run is what it is, when its trigger does not say (for example the first run after the "
        "mapping was re-pointed fetches every customer); null if nothing to say."
    )

    def get_cancelRequested(self, run: SyncRun) -> bool:
        return run.cancel_requested_at is not None

    @extend_schema_field(SyncErrorDetailSerializer(many=True))
    def get_errorDetails(self, run: SyncRun) -> list[Any]:
        return run.error_details if isinstance(run.error_details, list) else []

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_error(self, run: SyncRun) -> str | None:
        return run.error_message or None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_note(self, run: SyncRun) -> str | None:
        return run.note or None


# --- Envelopes (responses as a whole) --------------------------------------------------------


@extend_schema_field({"type": "boolean", "enum": [False]})
class AlwaysFalseField(serializers.BooleanField):
    """`success` of an error: the schema says false (and so do the examples
    generated from it), where a plain boolean would show `true`."""


class ErrorResponseSerializer(serializers.Serializer):
    success = AlwaysFalseField(help_text="Always false.")
    message = serializers.CharField(help_text="What went wrong, for a person.")
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Per field (or header) what is wrong with it; empty when the error is not about one input.",
    )


class SyncResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField(help_text="False if any mapping's sync failed.")
    message = serializers.CharField()
    data = SyncRunResultSerializer(many=True)  # type: ignore[assignment]


class SyncQueuedResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField(help_text="What is pending, and whether a worker has picked the runs up.")
    data = PendingSyncSerializer(many=True)  # type: ignore[assignment]


class SyncRunResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    data = SyncRunSerializer()  # type: ignore[assignment]


class SyncRunCancelResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    data = SyncRunSerializer()  # type: ignore[assignment]


class SyncStatusResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    data = SyncStatusSerializer(many=True)  # type: ignore[assignment]


class MappingListResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    data = MappingSerializer(many=True)  # type: ignore[assignment]


class MappingResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    data = MappingSerializer()  # type: ignore[assignment]


class MessageResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()


class SyncRunPageResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    count = serializers.IntegerField(help_text="Runs in the whole history.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    data = SyncRunSerializer(many=True)  # type: ignore[assignment]
