"""Bad settings are reported at start-up by a system check, with a clear message."""

import subprocess
import sys
from pathlib import Path

import pytest

from sabito_sync.checks import check_required_apps, check_sabito_settings
from sabito_sync.conf import load_sabito_settings

ROOT = Path(__file__).resolve().parent.parent


def check_messages():
    return [(message.id, message.msg) for message in check_sabito_settings()]


def test_defaults_pass_the_checks():
    assert check_messages() == []


def test_settings_are_parsed_into_typed_values(settings):
    settings.SABITO_SYNC_ENABLED = "off"
    settings.SABITO_PAGE_SIZE = "250"
    settings.SABITO_READ_TIMEOUT = "12.5"
    settings.SABITO_API_URL = "https://api.sabito.example/"

    loaded = load_sabito_settings()

    assert loaded.sync_enabled is False
    assert loaded.page_size == 250
    assert loaded.read_timeout == 12.5
    assert loaded.api_url == "https://api.sabito.example"


def test_a_sync_writes_2000_records_per_batch_by_default(settings):
    del settings.SABITO_WRITE_BATCH_RECORDS
    assert load_sabito_settings().write_batch_records == 2000

    settings.SABITO_WRITE_BATCH_RECORDS = "100"
    assert load_sabito_settings().write_batch_records == 100


def test_the_api_waits_20_seconds_by_default_and_0_means_not_at_all(settings):
    del settings.SABITO_SYNC_API_WAIT
    assert load_sabito_settings().api_wait_seconds == 20

    settings.SABITO_SYNC_API_WAIT = "0"
    assert load_sabito_settings().api_wait_seconds == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SABITO_SYNC_INTERVAL", "every six hours", "must have 5 fields"),
        ("SABITO_SYNC_INTERVAL", "0 */6 * * * *", "must have 5 fields"),
        ("SABITO_SYNC_INTERVAL", "61 * * * *", "is not a valid cron expression"),
        ("SABITO_API_URL", "sabito.example.com", "is not an http(s) URL"),
        ("SABITO_API_URL", "ftp://sabito.example.com", "is not an http(s) URL"),
        ("SABITO_SYNC_ENABLED", "ture", "is not a boolean"),
        ("SABITO_SYNC_ON_STARTUP", "maybe", "is not a boolean"),
        ("SABITO_PAGE_SIZE", "0", "out of range"),
        ("SABITO_PAGE_SIZE", "ten", "is not a whole number"),
        ("SABITO_WRITE_BATCH_RECORDS", "0", "out of range"),
        ("SABITO_WRITE_BATCH_RECORDS", "1e6", "is not a whole number"),
        ("SABITO_WRITE_BATCH_RECORDS", "100000", "out of range"),
        ("SABITO_READ_TIMEOUT", "-1", "out of range"),
        ("SABITO_MAX_RETRIES", "lots", "is not a whole number"),
        ("SABITO_SYNC_API_WAIT", "-1", "out of range"),
        ("SABITO_SYNC_API_WAIT", "3600", "out of range"),
        ("SABITO_SYNC_API_WAIT", "twenty", "is not a number"),
        ("SABITO_FANOUT_CHUNK_SIZE", "0", "out of range"),
        ("SABITO_FANOUT_CHUNK_SIZE", "fifty", "is not a whole number"),
    ],
)
def test_a_bad_value_is_a_system_check_error_naming_it(settings, name, value, message):
    setattr(settings, name, value)

    [(check_id, text)] = check_messages()

    assert check_id == "sabito_sync.E001"
    assert name in text and message in text


def test_an_unset_api_url_is_an_error_that_says_so(settings):
    settings.SABITO_API_URL = ""

    [(check_id, text)] = check_messages()

    assert check_id == "sabito_sync.E001" and text.startswith("SABITO_API_URL is not set")


def test_missing_api_key_is_an_error_while_sync_is_enabled(settings):
    settings.SABITO_API_KEY = ""

    assert [check_id for check_id, _ in check_messages()] == ["sabito_sync.E002"]


def test_missing_api_key_is_fine_when_sync_is_disabled(settings):
    settings.SABITO_API_KEY = ""
    settings.SABITO_SYNC_ENABLED = "false"

    assert check_messages() == []


@pytest.mark.project
def test_manage_py_check_fails_at_start_up_on_a_bad_interval(tmp_path):
    completed = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "SABITO_SYNC_INTERVAL": "0 */6 * *",
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        },
        capture_output=True,
        text=True,
    )

    assert completed.returncode != 0
    assert "sabito_sync.E001" in completed.stderr and "SABITO_SYNC_INTERVAL" in completed.stderr


@pytest.mark.parametrize("rate", ["lots", "30/fortnight", "x/minute"])
def test_a_bad_sync_throttle_rate_is_a_start_up_error(settings, rate):
    settings.SABITO_SYNC_THROTTLE = rate

    [(check_id, text)] = check_messages()

    assert check_id == "sabito_sync.E003" and rate in text


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SABITO_HEARTBEAT_SECONDS", "0", "must be from 0.1 to 60"),
        ("SABITO_HEARTBEAT_SECONDS", "often", "SABITO_HEARTBEAT_SECONDS"),
        ("SABITO_RESUME_WITHIN", "-1", "SABITO_RESUME_WITHIN"),
    ],
)
def test_bad_run_liveness_settings_are_reported(settings, name, value, message):
    setattr(settings, name, value)

    assert any(message in text for _id, text in check_messages()), check_messages()


def test_a_stale_limit_of_fewer_than_five_heartbeats_is_reported(settings):
    settings.SABITO_HEARTBEAT_SECONDS = "20"
    settings.SABITO_STALE_RUN_AFTER = "60"

    assert (
        "sabito_sync.E001",
        "SABITO_STALE_RUN_AFTER=60 must be at least 5 times SABITO_HEARTBEAT_SECONDS=20.",
    ) in check_messages()


@pytest.mark.parametrize("app", ["django_celery_beat", "rest_framework.authtoken"])
def test_a_missing_required_app_is_a_start_up_error(settings, app):
    settings.INSTALLED_APPS = [name for name in settings.INSTALLED_APPS if name != app]

    [message] = check_required_apps()

    assert message.id == "sabito_sync.E006" and repr(app) in message.msg


def test_the_project_installs_every_app_the_sync_needs():
    assert check_required_apps() == []


def test_an_api_wait_close_to_the_web_timeout_is_reported(settings, monkeypatch):
    from nexpro.checks import check_api_wait_fits_the_web_timeout

    monkeypatch.setenv("GUNICORN_TIMEOUT", "30")
    settings.SABITO_SYNC_API_WAIT = "20"
    assert check_api_wait_fits_the_web_timeout() == []

    settings.SABITO_SYNC_API_WAIT = "28"
    [warning] = check_api_wait_fits_the_web_timeout()
    assert warning.id == "nexpro.W001" and "GUNICORN_TIMEOUT=30" in warning.msg
