"""`sabito_sync` installs like a reusable app: `python -m build` makes a wheel that holds
the app and nothing of the project's, and the wheel, installed into a fresh venv, runs
in a minimal host project that knows only the README's documented settings."""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e

HOST_SETTINGS = """
    SECRET_KEY = "host-project-test-key-" + "x" * 40
    DEBUG = False
    ALLOWED_HOSTS = ["testserver"]
    USE_TZ = True
    ROOT_URLCONF = "hostproject.urls"
    DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
    DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
    INSTALLED_APPS = [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "rest_framework",
        "rest_framework.authtoken",
        "django_celery_beat",
        "sabito_sync",
    ]
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ]
    TEMPLATES = [
        {{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {{
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            }},
        }}
    ]
    STATIC_URL = "static/"
    # No REST_FRAMEWORK setting at all: the app's API must not need one.
    SABITO_API_URL = "https://api.sabito.example"
    SABITO_API_KEY = "host-key"
"""

HOST_URLS = """
    from django.contrib import admin
    from django.urls import include, path

    urlpatterns = [
        path("admin/", admin.site.urls),
        path("crm/api/", include("sabito_sync.urls")),
    ]
"""

# Run inside the host project: a member of a tenant calls the API with a Bearer token.
HOST_PROBE = """
    import json

    import django

    django.setup()

    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    import sabito_sync
    from sabito_sync.models import Membership, Tenant

    tenant = Tenant.objects.create(name="Host tenant", slug="host")
    user = get_user_model().objects.create_user("member", password=None)
    Membership.objects.create(user=user, tenant=tenant, role="admin")
    token = Token.objects.create(user=user)
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token.key}", "HTTP_X_TENANT_ID": str(tenant.pk)}

    def answer(response):
        return {"status": response.status_code, "contentType": response["Content-Type"], "body": response.json()}

    print(json.dumps({
        "version": sabito_sync.__version__,
        "module": sabito_sync.__file__,
        "adminHeader": str(admin.site.site_header),
        "status": answer(client.get("/crm/api/sabito/sync/status", **headers)),
        "noToken": answer(client.get("/crm/api/sabito/sync/status", HTTP_X_TENANT_ID=str(tenant.pk))),
        "tokenScheme": answer(client.get("/crm/api/sabito/sync/status", HTTP_AUTHORIZATION=f"Token {token.key}")),
        "badBody": answer(
            client.post("/crm/api/sabito/sync", {"fullSync": "yes"}, content_type="application/json", **headers)
        ),
        "otherTenant": answer(
            client.get("/crm/api/sabito/sync/status", HTTP_AUTHORIZATION=f"Bearer {token.key}",
                       HTTP_X_TENANT_ID="00000000-0000-0000-0000-000000000000")
        ),
    }))
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run(args, capture_output=True, text=True, timeout=180, **kwargs)
    assert completed.returncode == 0, f"{args} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return completed


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and wheel `python -m build` makes from this checkout (the build backend
    fetched from PyPI into build's own isolated environment, as for any user)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", str(out), str(ROOT))
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    [wheel] = dist.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed and nothing of this checkout. Its
    dependencies come from the project's venv (a .pth file: no download), and `pip
    check` proves the pinned set satisfies the wheel's declared ranges."""
    folder = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(folder)
    python = folder / "bin" / "python"
    site_packages = Path(
        run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    )
    project_site = Path(
        run(sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    )
    (site_packages / "project-dependencies.pth").write_text(f"{project_site}\n")
    run(
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--disable-pip-version-check",
        str(wheel),
    )
    run(str(python), "-m", "pip", "check", "--disable-pip-version-check")
    return python


def clean_env(**overrides) -> dict:
    """No PYTHONPATH, no DJANGO_/SABITO_ variables of the test run: only what the host sets."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "DJANGO_", "SABITO_", "PYTEST"))
    }
    env.update(overrides)
    return env


def test_the_wheel_holds_the_app_its_templates_static_files_and_migrations_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/", 1)[0] for name in names}

    assert packages == {"sabito_sync", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "sabito_sync/templates/admin/sabito_sync/sabitomapping/change_form.html" in names
    assert "sabito_sync/static/sabito_sync/admin.css" in names
    assert "sabito_sync/migrations/0001_initial.py" in names
    assert "sabito_sync/management/commands/sabito_sync.py" in names
    for unwanted in ("simulator", "sabito_demo", "tests/", "benchmarks/", "nexpro"):
        assert not [name for name in names if unwanted in name], unwanted


def test_the_wheel_declares_its_version_and_dependency_ranges(wheel):
    [metadata] = [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()

    assert wheel.name.startswith("django_sabito_sync-1.0.0-")
    assert "Version: 1.0.0" in text
    # Exactly what the matrix proves: its Django versions, and the range from its oldest.
    matrix = re.search(r"^DJANGO_VERSIONS = (\[.*\])$", (ROOT / "noxfile.py").read_text(), re.M)
    versions = ast.literal_eval(matrix.group(1))
    classified = re.findall(r"^Classifier: Framework :: Django :: (\S+)$", text, re.M)
    assert classified == versions == ["4.2", "5.1", "5.2"]
    assert f"Requires-Dist: Django<6.0,>={versions[0]}" in text
    assert "Classifier: Programming Language :: Python :: 3.11" in text
    requirements = [line.split(";")[0] for line in text.splitlines() if line.startswith("Requires-Dist:")]
    assert requirements and not [line for line in requirements if "==" in line]  # ranges, not this deployment's pins


def test_every_library_the_app_imports_is_a_dependency_its_wheel_declares(wheel):
    import ast
    import importlib.metadata
    import re

    [metadata] = [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    declared = {
        re.split(r"[<>=!~\[; ]", line.removeprefix("Requires-Dist: "), maxsplit=1)[0].lower().replace("_", "-")
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    }
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for path in (ROOT / "sabito_sync").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name in distributions and name not in sys.stdlib_module_names}
    needed = {distributions[name][0].lower().replace("_", "-") for name in third_party if name != "sabito_sync"}

    # A host that pip-installs the app gets what it imports (psycopg is the
    # `postgres` extra: only where PostgreSQL is used, and imported only there; redis
    # the `redis` extra, imported only when the cache is Redis).
    assert needed - declared == set()
    assert {"orjson", "msgspec", "requests"} <= needed


def test_twine_finds_the_sdist_and_wheel_fit_to_upload(dist):
    """Their metadata and the long description (the README) render on PyPI."""
    files = sorted(str(path) for path in dist.iterdir())
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *files)

    assert checked.stdout.count("PASSED") == len(files) == 2


def test_the_sdist_leaves_out_the_project(dist):
    import tarfile

    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()

    assert any(name.endswith("/CHANGELOG.md") for name in names)
    for unwanted in ("/tests/", "/nexpro/", "/sabito_simulator/", "/benchmarks/", "sabito_demo"):
        assert not [name for name in names if unwanted in name], unwanted


def test_a_minimal_host_project_migrates_and_gets_the_guides_api(fresh_python, tmp_path):
    host = tmp_path / "host"
    (host / "hostproject").mkdir(parents=True)
    (host / "hostproject" / "__init__.py").write_text("")
    (host / "hostproject" / "settings.py").write_text(
        textwrap.dedent(HOST_SETTINGS.format(database=str(tmp_path / "host.sqlite3")))
    )
    (host / "hostproject" / "urls.py").write_text(textwrap.dedent(HOST_URLS))
    (host / "probe.py").write_text(textwrap.dedent(HOST_PROBE))
    env = clean_env(DJANGO_SETTINGS_MODULE="hostproject.settings")

    check = run(str(fresh_python), "-m", "django", "check", "--fail-level", "WARNING", cwd=host, env=env)
    run(str(fresh_python), "-m", "django", "migrate", "--noinput", "-v", "0", cwd=host, env=env)
    probe = json.loads(run(str(fresh_python), "probe.py", cwd=host, env=env).stdout.strip().splitlines()[-1])

    assert "no issues" in check.stdout
    assert probe["version"] == "1.0.0"
    assert not probe["module"].startswith(str(ROOT)), "the host imported the checkout, not the wheel"
    assert probe["adminHeader"] == "Django administration"  # the app leaves the host's admin alone
    status = probe["status"]
    assert status["status"] == 200 and status["contentType"] == "application/json"
    assert status["body"]["success"] is True and status["body"]["data"] == []
    assert probe["noToken"]["status"] == 401
    assert probe["noToken"]["body"] == {
        "success": False,
        "message": "Authentication credentials were not provided.",
        "errors": {},
    }
    assert probe["tokenScheme"]["status"] == 401 and "Bearer" in probe["tokenScheme"]["body"]["message"]
    assert probe["badBody"]["status"] == 400
    assert probe["badBody"]["body"]["success"] is False and "fullSync" in probe["badBody"]["body"]["errors"]
    assert probe["otherTenant"]["status"] == 403 and probe["otherTenant"]["body"]["success"] is False


def test_a_host_without_the_required_apps_is_told_at_start_up(fresh_python, tmp_path):
    host = tmp_path / "host"
    (host / "hostproject").mkdir(parents=True)
    (host / "hostproject" / "__init__.py").write_text("")
    settings = textwrap.dedent(HOST_SETTINGS.format(database=str(tmp_path / "host.sqlite3")))
    settings = settings.replace('    "django_celery_beat",\n', "").replace('    "rest_framework.authtoken",\n', "")
    settings = settings.replace('SABITO_API_URL = "https://api.sabito.example"\n', "")
    (host / "hostproject" / "settings.py").write_text(settings)
    (host / "hostproject" / "urls.py").write_text(textwrap.dedent(HOST_URLS))

    completed = subprocess.run(
        [str(fresh_python), "-m", "django", "check"],
        cwd=host,
        env=clean_env(DJANGO_SETTINGS_MODULE="hostproject.settings"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode != 0
    assert completed.stderr.count("sabito_sync.E006") == 2
    assert "'django_celery_beat' is not in INSTALLED_APPS" in completed.stderr
    assert "'rest_framework.authtoken' is not in INSTALLED_APPS" in completed.stderr
    assert "SABITO_API_URL is not set" in completed.stderr
