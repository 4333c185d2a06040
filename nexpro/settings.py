"""NEXPro settings, read from the environment with safe defaults.

Every value can be set in the environment or in a `.env` file at the project root
(see `.env.example`). Defaults give a working development setup with no services:
SQLite under `var/`, Celery over a filesystem broker under `var/broker/`, and the
built-in Sabito simulator on http://127.0.0.1:8001.

The SABITO_* values are kept as the raw strings the operator wrote: `sabito_sync.conf`
parses them and `sabito_sync.checks` reports a bad one at start-up with a clear
message, instead of django-environ silently reading "ture" as False.
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"

# "development" (the default: runs on a laptop over plain HTTP) or "production":
# HTTPS-only cookies, HSTS and an HTTPS redirect by default, and start-up errors
# (nexpro/checks.py) for DEBUG or a missing or development SECRET_KEY.
DJANGO_ENV = env.str("DJANGO_ENV", default="development")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or DEVELOPMENT_SECRET_KEY
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=PRODUCTION)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=PRODUCTION)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=PRODUCTION)
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    # Behind a TLS-terminating proxy that sets this header (and strips it from clients).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "nexpro.apps.NexproConfig",
    "sabito_sync",
]

MIDDLEWARE = [
    # First: probes and Prometheus address a container by its IP over plain HTTP, which
    # ALLOWED_HOSTS and the HTTPS redirect below would refuse (sabito_sync.ops.health).
    "sabito_sync.ops.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "nexpro.urls"
WSGI_APPLICATION = "nexpro.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share one SQLite file in the default
    # setup. WAL lets readers run beside the writer, IMMEDIATE transactions take
    # the write lock up front (no deadlock when two readers upgrade at once), and
    # the timeout makes a writer wait for the lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not the in-memory default, so that test workers and servers running
    # in other threads or processes see the same test database; one per test run,
    # so that two runs on one machine never share it.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = env.str(
        "TEST_DATABASE_PATH", default=str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
FORMAT_MODULE_PATH = ["nexpro.formats"]
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Cache ----------------------------------------------------------------------
# The API's throttle counters (and the status endpoint's answers) live in the cache,
# which every web process must share for the documented rate to hold: Redis when there
# is one, otherwise files under CACHE_DIR that the processes of one host share.
# CACHE_KEY_PREFIX keeps two stacks (or test runs) that share one Redis database apart.
if env.str("REDIS_URL", default=""):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.str("REDIS_URL"),
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default=""),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": env.str("CACHE_DIR", default="") or str(VAR_DIR / "cache"),
        }
    }

# --- Celery ---------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# The filesystem transport ignores the host; naming one keeps kombu from warning.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://localhost/"
CELERY_BROKER_FOLDER = Path(env.str("CELERY_BROKER_FOLDER", default="") or VAR_DIR / "broker")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: messages are files in one folder that every
    # process on this host reads and writes, so no broker server is needed.
    CELERY_BROKER_TRANSPORT = "nexpro.broker:Transport"  # writes messages atomically
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_FOLDER / "queue"),
        "data_folder_out": str(CELERY_BROKER_FOLDER / "queue"),
        "control_folder": str(CELERY_BROKER_FOLDER / "control"),
        "store_processed": False,
    }
# The queue every task goes to and every worker consumes. Two stacks (or two test
# runs) sharing one broker keep their work apart by naming their own.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="celery")
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=55 * 60)
CELERY_TASK_ACKS_LATE = True
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis re-delivers a task not acknowledged within the visibility timeout; with
    # late acks that must outlast the longest task, or long syncs would run twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 15 * 60}
if CELERY_BROKER_URL.startswith("redis://"):
    # A worker outlives Redis going away in the middle of a task (see nexpro/broker.py).
    # (Not for rediss://: naming a transport drops the scheme, and with it kombu's TLS.)
    CELERY_BROKER_TRANSPORT = "nexpro.broker:RedisTransport"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# django-celery-beat's DatabaseScheduler, recording each round of its loop for /readyz.
CELERY_BEAT_SCHEDULER = "sabito_sync.ops.health:HeartbeatScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- REST framework -------------------------------------------------------------
# The sabito_sync API views carry their own authentication (Bearer tokens), JSON
# rendering and parsing, error body and throttle; the project only picks the schema
# generator for /api/schema/.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "NEXPro Sabito sync API",
    "DESCRIPTION": (
        "Trigger and monitor the Sabito customer sync, per tenant. Every request carries "
        "`Authorization: Bearer <token>` and `X-Tenant-ID: <tenant uuid>`; errors answer "
        '`{"success": false, "message": ..., "errors": {...}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's assets from the installed sidecar package, not a CDN: the docs
    # page works offline and the browser loads no third-party code.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Sabito sync ----------------------------------------------------------------
# Raw strings on purpose: parsed and validated by sabito_sync.conf / checks.
# In development the sync talks to the built-in simulator (`manage.py
# sabito_simulator`, key "sim-key") unless told otherwise. In production there is no
# default: an unset SABITO_API_URL is a start-up error (sabito_sync.E001) and an
# http:// one a warning (nexpro.W002). Once SABITO_API_URL names a real Sabito, the
# key must be set too: an empty one is a start-up error.
SABITO_SIMULATOR_URL = "http://127.0.0.1:8001"
SABITO_SIMULATOR_API_KEY = "sim-key"
SABITO_API_URL = env.str("SABITO_API_URL", default="" if PRODUCTION else SABITO_SIMULATOR_URL)
SABITO_API_KEY = env.str(
    "SABITO_API_KEY", default=SABITO_SIMULATOR_API_KEY if SABITO_API_URL == SABITO_SIMULATOR_URL else ""
)
SABITO_SYNC_ENABLED = env.str("SABITO_SYNC_ENABLED", default="true")
SABITO_SYNC_INTERVAL = env.str("SABITO_SYNC_INTERVAL", default="0 */6 * * *")
SABITO_SYNC_ON_STARTUP = env.str("SABITO_SYNC_ON_STARTUP", default="true")
SABITO_PAGE_SIZE = env.str("SABITO_PAGE_SIZE", default="100")
SABITO_WRITE_BATCH_RECORDS = env.str("SABITO_WRITE_BATCH_RECORDS", default="2000")
SABITO_MAX_RESPONSE_BYTES = env.str("SABITO_MAX_RESPONSE_BYTES", default="33554432")
SABITO_CONNECT_TIMEOUT = env.str("SABITO_CONNECT_TIMEOUT", default="5")
SABITO_READ_TIMEOUT = env.str("SABITO_READ_TIMEOUT", default="30")
SABITO_MAX_RETRIES = env.str("SABITO_MAX_RETRIES", default="4")
SABITO_RETRY_BACKOFF = env.str("SABITO_RETRY_BACKOFF", default="1")
SABITO_SYNC_OVERLAP = env.str("SABITO_SYNC_OVERLAP", default="300")
SABITO_STALE_RUN_AFTER = env.str("SABITO_STALE_RUN_AFTER", default="60")
SABITO_HEARTBEAT_SECONDS = env.str("SABITO_HEARTBEAT_SECONDS", default="2")
SABITO_RESUME_WITHIN = env.str("SABITO_RESUME_WITHIN", default="86400")
SABITO_TASK_MAX_RETRIES = env.str("SABITO_TASK_MAX_RETRIES", default="3")
SABITO_TASK_RETRY_DELAY = env.str("SABITO_TASK_RETRY_DELAY", default="60")
# Per-user rate of the two endpoints that start syncs, e.g. "30/minute"; "" = no limit.
SABITO_SYNC_THROTTLE = env.str("SABITO_SYNC_THROTTLE", default="30/minute")
SABITO_SYNC_API_WAIT = env.str("SABITO_SYNC_API_WAIT", default="20")
SABITO_RUN_RETENTION_DAYS = env.str("SABITO_RUN_RETENTION_DAYS", default="90")
SABITO_SYNC_ALERT_AFTER_FAILURES = env.str("SABITO_SYNC_ALERT_AFTER_FAILURES", default="1")
SABITO_SYNC_WEBHOOK_URL = env.str("SABITO_SYNC_WEBHOOK_URL", default="")
SABITO_SYNC_WEBHOOK_SECRET = env.str("SABITO_SYNC_WEBHOOK_SECRET", default="")

# --- Monitoring -------------------------------------------------------------------
# /healthz, /readyz and /metrics (sabito_sync.ops.health). With a token set, /metrics
# answers only `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Logging --------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# "plain" (default) or "json": one JSON object per line, with level, logger, timestamp
# and, on every sync line, the mapping, business, tenant and run ids.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "sync_context": {"()": "sabito_sync.logcontext.SyncContextFilter"},
    },
    "formatters": {
        # Control characters in a message (a name, a record from Sabito) are escaped.
        "plain": {
            "class": "sabito_sync.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            # On the handler, not a logger: a logger's filters skip records its children propagate.
            "filters": ["sync_context"],
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        # Propagate to the root handler so one handler prints each line once.
        "sabito_sync": {"level": LOG_LEVEL},
        "celery": {"level": "INFO"},
    },
}
