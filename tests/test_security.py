"""Production settings, and the Sabito API key kept out of every output."""

import logging
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from sabito_sync.models import SyncRun

from .api_fixtures import inline_worker  # noqa: F401 (fixture)
from .conftest import SABITO_TEST_KEY
from .factories import SabitoMappingFactory, sabito_record

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION_ENV = {
    "PATH": "/usr/bin:/bin",
    "DJANGO_ENV": "production",
    "ALLOWED_HOSTS": "nexpro.example.com",
    "SABITO_API_URL": "https://api.sabito.example",
    "SABITO_API_KEY": "a-real-key",
    "METRICS_TOKEN": "a-metrics-token",
}


def manage(*args, env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.project
def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = PRODUCTION_ENV | {"SECRET_KEY": secrets.token_urlsafe(64), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}

    completed = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert completed.returncode == 0, completed.stderr
    assert "System check identified no issues" in completed.stdout


@pytest.mark.project
def test_production_without_a_metrics_token_is_warned_about(tmp_path):
    env = PRODUCTION_ENV | {
        "SECRET_KEY": secrets.token_urlsafe(64),
        "METRICS_TOKEN": "",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
    }

    completed = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert completed.returncode != 0 and "sabito_sync.W002" in completed.stderr


@pytest.mark.project
def test_production_refuses_the_development_secret_key(tmp_path):
    env = PRODUCTION_ENV | {"DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}

    completed = manage("check", env=env)

    assert completed.returncode != 0
    assert "nexpro.E002" in completed.stderr and "SECRET_KEY" in completed.stderr


@pytest.mark.project
def test_production_refuses_debug(tmp_path):
    env = PRODUCTION_ENV | {
        "SECRET_KEY": secrets.token_urlsafe(64),
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
    }

    completed = manage("check", env=env)

    assert completed.returncode != 0 and "nexpro.E001" in completed.stderr


@pytest.mark.project
def test_production_without_a_sabito_api_key_is_a_start_up_error(tmp_path):
    env = PRODUCTION_ENV | {
        "SECRET_KEY": secrets.token_urlsafe(64),
        "SABITO_API_KEY": "",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
    }

    completed = manage("check", env=env)

    assert completed.returncode != 0 and "sabito_sync.E002" in completed.stderr


@pytest.mark.project
def test_production_without_a_sabito_api_url_is_a_start_up_error_not_the_simulator(tmp_path):
    env = PRODUCTION_ENV | {"SECRET_KEY": secrets.token_urlsafe(64), "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}
    del env["SABITO_API_URL"]

    completed = manage("check", env=env)

    assert completed.returncode != 0
    assert "sabito_sync.E001" in completed.stderr and "SABITO_API_URL is not set" in completed.stderr


@pytest.mark.project
def test_production_warns_about_a_plain_http_sabito_api_url(tmp_path):
    env = PRODUCTION_ENV | {
        "SECRET_KEY": secrets.token_urlsafe(64),
        "SABITO_API_URL": "http://api.sabito.example",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
    }

    completed = manage("check", "--fail-level", "WARNING", env=env)

    assert completed.returncode != 0 and "nexpro.W002" in completed.stderr


@pytest.mark.project
def test_development_defaults_to_the_local_simulator(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}
    read = "from django.conf import settings; print(settings.SABITO_API_URL, settings.SABITO_API_KEY)"

    completed = manage("shell", "-v", "0", "-c", read, env=env)

    assert completed.stdout.split() == ["http://127.0.0.1:8001", "sim-key"]


@pytest.mark.django_db
def test_api_key_appears_in_no_log_result_admin_page_or_api_response(fake_sabito, admin_client, caplog, inline_worker):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from sabito_sync.engine.sync import sync_mapping
    from sabito_sync.models import Membership
    from sabito_sync.runs.result import result_data as sync_result_data

    caplog.set_level(logging.DEBUG)
    mapping = SabitoMappingFactory(sabito_business_id="biz-1")
    fake_sabito.answer_next(401, f'{{"error": "key {SABITO_TEST_KEY} revoked"}}')
    rejected = sync_mapping(mapping=mapping)
    fake_sabito.answer_next(200, f"<html>proxy error: upstream saw X-API-Key: {SABITO_TEST_KEY}</html>", times=3)
    garbled = sync_mapping(mapping=mapping)
    fake_sabito.answer_next(500, times=3)
    unavailable = sync_mapping(mapping=mapping)
    fake_sabito.records["biz-1"] = [sabito_record(1)]
    succeeded = sync_mapping(mapping=mapping)

    admin_user = admin_client.session.get("_auth_user_id")
    token = Token.objects.create(user_id=admin_user)
    Membership.objects.create(user_id=admin_user, tenant=mapping.tenant, role="admin")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}", HTTP_X_TENANT_ID=str(mapping.tenant_id))
    pages = [
        admin_client.get("/admin/sabito_sync/sabitomapping/").content,
        admin_client.get(f"/admin/sabito_sync/sabitomapping/{mapping.pk}/change/").content,
        admin_client.get("/admin/sabito_sync/syncrun/").content,
        *[admin_client.get(f"/admin/sabito_sync/syncrun/{run.pk}/change/").content for run in SyncRun.objects.all()],
        api.get("/api/sabito/sync/status").content,
        api.get("/api/sabito/mappings").content,
        api.get(f"/api/sabito/mappings/{mapping.pk}/runs").content,
        *[api.get(f"/api/sabito/runs/{run.pk}").content for run in SyncRun.objects.all()],
        api.post(f"/api/sabito/sync/{mapping.pk}", {"fullSync": True}, format="json").content,
    ]

    assert not rejected.success and not garbled.success and not unavailable.success and succeeded.success
    everything = caplog.text + repr([sync_result_data(r) for r in (rejected, garbled, unavailable, succeeded)])
    everything += repr(list(SyncRun.objects.values())) + b"".join(pages).decode()
    assert "[redacted]" in everything  # the echoed key was there to leak, and was scrubbed
    assert SABITO_TEST_KEY not in everything


@pytest.mark.django_db
def test_a_tenant_admin_cannot_use_staff_only_admin_paths(client, django_capture_on_commit_callbacks):
    from unittest.mock import patch

    from django.urls import reverse
    from rest_framework.authtoken.models import Token

    from .factories import MembershipFactory

    membership = MembershipFactory(role="admin")
    mapping = SabitoMappingFactory(tenant=membership.tenant)
    client.force_login(membership.user)  # a tenant admin, but not platform staff
    token = Token.objects.create(user=membership.user)
    paths = [
        reverse("admin:index"),
        reverse("admin:sabito_sync_sabitomapping_changelist"),
        reverse("admin:sabito_sync_sabitomapping_change", args=[mapping.pk]),
        reverse("admin:sabito_sync_syncrun_changelist"),
    ]

    with (
        patch("sabito_sync.tasks.sync_mapping_task.apply_async") as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        pressed = client.post(reverse("admin:sabito_sync_sabitomapping_sync_full", args=[mapping.pk]))
        with_token = client.get(paths[1], HTTP_AUTHORIZATION=f"Bearer {token.key}")
        pages = [client.get(path) for path in paths]

    for response in [pressed, with_token, *pages]:
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    apply_async.assert_not_called()
    assert not SyncRun.objects.exists()
