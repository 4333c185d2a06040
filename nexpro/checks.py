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
