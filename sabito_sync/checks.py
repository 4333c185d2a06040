"""System checks: tell the operator at start-up (runserver, migrate, the worker,
`manage.py check`) what is misconfigured, instead of failing mid-sync."""

from django.apps import apps
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import SabitoSettingsError, load_sabito_settings, sync_throttle_rate

# The apps sabito_sync's models, API and schedule build on: without them migrate fails
# on a foreign key, every API call fails on the token table, or beat has no schedule.
REQUIRED_APPS = {
    "rest_framework": "the REST API",
    "rest_framework.authtoken": "the API's Bearer tokens (its Token model)",
    "django_celery_beat": "the periodic sync's schedule rows",
}


@register(Tags.compatibility)
def check_required_apps(app_configs=None, **kwargs):
    return [
        Error(
            f"{name!r} is not in INSTALLED_APPS; sabito_sync needs it for {purpose}.",
            hint=f"Add {name!r} to INSTALLED_APPS (see docs/own-project.md in the app's repository).",
            id="sabito_sync.E006",
        )
        for name, purpose in REQUIRED_APPS.items()
        if not apps.is_installed(name)
    ]


@register(Tags.compatibility)
def check_sabito_settings(app_configs=None, **kwargs):
    try:
        settings = load_sabito_settings()
    except SabitoSettingsError as exc:
        return [
            Error(problem, hint="Fix the value in the environment or .env (see .env.example).", id="sabito_sync.E001")
            for problem in exc.problems
        ]
    messages: list[CheckMessage] = []
    if settings.sync_enabled and not settings.api_key:
        messages.append(
            Error(
                "SABITO_API_KEY is empty while SABITO_SYNC_ENABLED is true: every sync would be rejected.",
                hint="Set SABITO_API_KEY, or set SABITO_SYNC_ENABLED=false.",
                id="sabito_sync.E002",
            )
        )
    if (problem := throttle_rate_problem()) is not None:
        messages.append(Error(problem, hint="Use a rate like 30/minute, 500/hour or 10/second.", id="sabito_sync.E003"))
    if settings.overlap_seconds == 0:
        messages.append(
            Warning(
                "SABITO_SYNC_OVERLAP is 0: records updated on the watermark's own second, or while the "
                "clocks disagree, can be missed by incremental syncs.",
                hint="Keep a few minutes of overlap; repeated records are merely counted as skipped.",
                id="sabito_sync.W001",
            )
        )
    if settings.webhook_url and not settings.webhook_secret:
        messages.append(
            Error(
                "SABITO_SYNC_WEBHOOK_URL is set but SABITO_SYNC_WEBHOOK_SECRET is empty: the receiver could not "
                "tell our alerts from forged ones.",
                hint="Set SABITO_SYNC_WEBHOOK_SECRET to a long random string shared with the receiver.",
                id="sabito_sync.E004",
            )
        )
    messages.extend(operations_messages())
    return messages


def operations_messages() -> list[CheckMessage]:
    from django.conf import settings

    messages: list[CheckMessage] = []
    log_format = getattr(settings, "LOG_FORMAT", "plain")
    if log_format not in ("plain", "json"):
        messages.append(
            Error(
                f"LOG_FORMAT={log_format!r} is not plain or json.",
                hint="Use LOG_FORMAT=json or unset it.",
                id="sabito_sync.E005",
            )
        )
    if getattr(settings, "PRODUCTION", False) and not getattr(settings, "METRICS_TOKEN", ""):
        messages.append(
            Warning(
                "METRICS_TOKEN is empty: anyone who can reach /metrics reads every mapping's business and tenant ids.",
                hint="Set METRICS_TOKEN and give Prometheus the same value as its bearer token.",
                id="sabito_sync.W002",
            )
        )
    return messages


def throttle_rate_problem() -> str | None:
    from rest_framework.throttling import SimpleRateThrottle

    rate = sync_throttle_rate()
    if rate is None:
        return None
    try:
        SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]  # it never reads self
    except (ValueError, KeyError, IndexError, TypeError):
        return f"SABITO_SYNC_THROTTLE={rate!r} is not a rate."
    return None
