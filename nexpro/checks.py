"""Start-up checks for a production deployment (DJANGO_ENV=production)."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security)
def check_production_settings(app_configs=None, **kwargs):
    if not getattr(settings, "PRODUCTION", False):
        return []
    errors = []
    if settings.DEBUG:
        errors.append(
            Error(
                "DEBUG is on in production: error pages would show settings and code to anyone.",
                hint="Unset DEBUG or set DEBUG=false.",
                id="nexpro.E001",
            )
        )
    if settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY or len(settings.SECRET_KEY) < 50:
        errors.append(
            Error(
                "SECRET_KEY is missing, the development key, or shorter than 50 characters.",
                hint='Set SECRET_KEY to a long random string, e.g. python -c "import secrets; print(secrets.token_urlsafe(64))".',
                id="nexpro.E002",
            )
        )
    if str(settings.SABITO_API_URL).strip().lower().startswith("http://"):
        errors.append(
            Warning(
                f"SABITO_API_URL={settings.SABITO_API_URL!r} is plain HTTP: the API key and every customer "
                "record would cross the network unencrypted.",
                hint="Use the Sabito API's https:// URL.",
                id="nexpro.W002",
            )
        )
    return errors


@register()
def check_api_wait_fits_the_web_timeout(app_configs=None, **kwargs):
    """The sync endpoints hold a web worker while they wait for the runs they queued:
    a wait as long as gunicorn's timeout gets the worker killed mid-answer."""
    import os

    from sabito_sync.conf import SabitoSettingsError, load_sabito_settings

    try:
        wait = load_sabito_settings().api_wait_seconds
        timeout = int(os.environ.get("GUNICORN_TIMEOUT", "").strip() or 30)
    except (SabitoSettingsError, ValueError):
        return []  # reported by the checks of those settings
    if wait + 5 <= timeout:
        return []
    return [
        Warning(
            f"SABITO_SYNC_API_WAIT={wait:g} leaves less than 5 s of GUNICORN_TIMEOUT={timeout}: a sync request "
            "that waits that long is killed with its web worker.",
            hint="Lower SABITO_SYNC_API_WAIT or raise GUNICORN_TIMEOUT.",
            id="nexpro.W001",
        )
    ]
