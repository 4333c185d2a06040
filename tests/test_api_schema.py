"""The OpenAPI schema: it validates, documents every endpoint with its auth, tenant
header and answers, and a schemathesis run generated from it finds no 5xx and no
answer that contradicts it."""

import json
from contextlib import contextmanager

import pytest
import schemathesis
import yaml
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

from tests.api_fixtures import fresh_throttle_history, queued_run  # noqa: F401 (fixtures)
from tests.factories import MembershipFactory, SabitoMappingFactory, TenantFactory, UserFactory, sabito_record

pytestmark = pytest.mark.project  # the schema is served by the project's urls (drf-spectacular)

OPERATIONS = {
    ("/api/sabito/sync", "post"),
    ("/api/sabito/sync/{mappingId}", "post"),
    ("/api/sabito/sync/status", "get"),
    ("/api/sabito/mappings", "get"),
    ("/api/sabito/mappings", "post"),
    ("/api/sabito/mappings/{mappingId}", "get"),
    ("/api/sabito/mappings/{mappingId}", "patch"),
    ("/api/sabito/mappings/{mappingId}", "delete"),
    ("/api/sabito/mappings/{mappingId}/runs", "get"),
    ("/api/sabito/runs/{runId}", "get"),
    ("/api/sabito/runs/{runId}/cancel", "post"),
}


@pytest.fixture(scope="module")
def openapi(django_db_blocker) -> dict:
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def operations(openapi):
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert yaml.safe_load((tmp_path / "schema.yaml").read_text())["openapi"].startswith("3.")


def test_schema_lists_every_endpoint(openapi):
    assert {(path, method) for path, method, _ in operations(openapi)} == OPERATIONS


def test_every_operation_requires_the_bearer_token(openapi):
    assert openapi["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": openapi["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path, method, operation in operations(openapi):
        assert operation["security"] == [{"bearerAuth": []}], (path, method)


def test_every_operation_requires_the_tenant_header_as_a_uuid(openapi):
    for path, method, operation in operations(openapi):
        [header] = [p for p in operation["parameters"] if p["in"] == "header"]
        assert (header["name"], header["required"], header["schema"]) == (
            "X-Tenant-ID",
            True,
            {"type": "string", "format": "uuid"},
        ), (path, method)


def test_every_operation_documents_its_error_answers(openapi):
    for path, method, operation in operations(openapi):
        for status in ("400", "401", "403"):
            assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"
            }, (path, method, status)
        if "{mappingId}" in path or "{runId}" in path:
            assert "404" in operation["responses"], (path, method)


def test_error_answers_say_success_is_false_so_their_examples_do_too(openapi):
    schemas = openapi["components"]["schemas"]
    success = schemas["ErrorResponse"]["properties"]["success"]
    for ref in [part["$ref"] for part in success.get("allOf", [])]:
        success = schemas[ref.rsplit("/", 1)[1]]

    assert success["type"] == "boolean" and success["enum"] == [False]


def test_sync_operations_document_finished_pending_unavailable_and_the_throttle(openapi):
    for path in ("/api/sabito/sync", "/api/sabito/sync/{mappingId}"):
        responses = openapi["paths"][path]["post"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SyncResponse")
        assert responses["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/SyncQueuedResponse")
        assert "503" in responses and "429" in responses
    assert "409" in openapi["paths"]["/api/sabito/sync/{mappingId}"]["post"]["responses"]


def test_sync_answers_document_each_runs_id_status_and_url(openapi):
    schemas = openapi["components"]["schemas"]

    assert {"runId", "status", "alreadyRunning"} <= set(schemas["SyncRunResult"]["properties"])
    assert {"mappingId", "businessId", "runId", "status", "url"} <= set(schemas["PendingSync"]["properties"])


def test_run_operations_document_the_run_and_the_cancel_answers(openapi):
    run = openapi["paths"]["/api/sabito/runs/{runId}"]["get"]["responses"]
    cancel = openapi["paths"]["/api/sabito/runs/{runId}/cancel"]["post"]["responses"]

    assert run["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SyncRunResponse")
    assert cancel["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/SyncRunCancelResponse")
    assert "409" in cancel
    assert {"pagesDone", "cancelRequested", "mappingId"} <= set(
        openapi["components"]["schemas"]["SyncRun"]["properties"]
    )


def test_sync_body_documents_full_sync_and_async(openapi):
    body = openapi["components"]["schemas"]["SyncInputRequest"]

    assert body["properties"]["fullSync"]["type"] == "boolean"
    assert body["properties"]["async"]["type"] == "boolean"


def test_docs_page_is_served(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    # Its assets come from this server (the sidecar package), never from a CDN.
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in response.content
    assert b"cdn" not in response.content.lower()


# --- Schemathesis -----------------------------------------------------------------------------


@contextmanager
def connections_kept_open():
    """Serve requests through Django's real WSGI handler inside the test's
    transaction: like Django's test client, stop it closing the connection
    between requests."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


# The fuzz run's caller and mapping: the schema is loaded when this module is
# imported, before any fixture runs, so their ids are fixed here and the rows are
# created by `fuzz_caller`.
FUZZ_TOKEN = "f" * 40
FUZZ_TENANT_ID = "7d9a1c3e-0b5f-4e2a-9c61-2f8e4b7a5d10"
FUZZ_MAPPING_ID = "0c1e5a77-3d2b-4f60-8a9e-6b5d4c3a2f19"
FUZZ_RUN_ID = "5b7f2c10-9e4d-4a3b-8c21-7d6e5f4a3b29"


def fuzz_schema(**parameters):
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json",
        WSGIHandler(),
        config=schemathesis.Config.from_dict(
            {
                "headers": {"Authorization": f"Bearer {FUZZ_TOKEN}"},
                # Fixed, so generated requests get past the tenant check and reach the
                # views; the header's own validation is tested in test_api.py.
                "parameters": {"header.X-Tenant-ID": FUZZ_TENANT_ID, **parameters},
                "operations": [
                    {
                        # A schema-valid business id may already be mapped (generated twice): 400 by design.
                        "include-operation-id": "mappings_create",
                        "checks": {
                            "positive_data_acceptance": {
                                "expected-statuses": ["2xx", "400", "401", "403", "404", "409"]
                            }
                        },
                    },
                    {
                        # The first cancel of the queued run cancels it; every later one finds it finished: 409.
                        "include-operation-id": "runs_cancel",
                        "checks": {
                            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409"]}
                        },
                    },
                ],
            }
        ),
    )


# Generated ids (almost always unknown: 404) and the ids of the caller's real mapping and run.
schema = fuzz_schema()
schema_with_real_mapping = fuzz_schema(**{"path.mappingId": FUZZ_MAPPING_ID, "path.runId": FUZZ_RUN_ID})


@pytest.fixture
def fuzz_caller(db, fake_sabito, settings):
    """A tenant admin with a mapping that has a queued run and customers in Sabito."""
    # Generated requests come faster than any sensible rate.
    settings.SABITO_SYNC_THROTTLE = ""
    tenant = TenantFactory(pk=FUZZ_TENANT_ID)
    user = UserFactory(password=None)
    MembershipFactory(user=user, tenant=tenant, role="admin")
    Token.objects.create(user=user, key=FUZZ_TOKEN)
    mapping = SabitoMappingFactory(pk=FUZZ_MAPPING_ID, tenant=tenant, sabito_business_id="biz-fuzz")
    queued_run(mapping, pk=FUZZ_RUN_ID)
    fake_sabito.records["biz-fuzz"] = [sabito_record(1), sabito_record(2)]
    with connections_kept_open():
        yield


FUZZ_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@FUZZ_SETTINGS
def test_generated_requests_get_no_server_error_and_answers_match_the_schema(case, fuzz_caller):
    case.call_and_validate()


@schema_with_real_mapping.parametrize()
@FUZZ_SETTINGS
def test_generated_requests_on_a_real_mapping_get_no_server_error(case, fuzz_caller):
    case.call_and_validate()
