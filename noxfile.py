"""The app's version matrix: `sabito_sync` alone, in a minimal host project
(`tests/host/`), under each supported Django on SQLite and PostgreSQL.

    .venv/bin/nox -s app                       # every session
    .venv/bin/nox -s "app(django='4.2', database='sqlite')"
    .venv/bin/nox -l                           # the list

Each session installs the app as a user would (`pip install .[postgres,redis]`, the
ranges of `pyproject.toml`), then that Django and the test tools at the versions
`requirements-dev.txt` pins, and runs the app's tests (`-m "not e2e and not project"`:
the end-to-end tests and those of the `nexpro` project around the app run in the
project's own lanes of `.ci/run`). One virtualenv per Django version, under `.nox/`.
PostgreSQL sessions use the server `NOX_POSTGRES_URL` names (default: the local one);
pytest-django creates the test database `test_nexpro_nox_<django>_<pid>` there and
drops it at the end, so two runs on one host never meet.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["app"]

ROOT = Path(__file__).parent
DJANGO_VERSIONS = ["4.2", "5.1", "5.2"]
DATABASES = ["sqlite", "postgresql"]
TEST_TOOLS = ["pytest", "pytest-django", "responses", "factory-boy", "hypothesis"]
# Modules of the project's lanes only, which import tools the app's tests do not need
# (schemathesis, Playwright, PyYAML) when they are collected.
PROJECT_ONLY_MODULES = ["tests/test_api_schema.py", "tests/test_admin_browser.py", "tests/test_main_command.py"]


def pinned(names: list[str]) -> list[str]:
    """The `name==version` lines of requirements-dev.txt for these names."""
    pins = {}
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[match.group(1).lower()] = line.strip()
    return [pins[name] for name in names]


@nox.session(python=False, venv_backend="none", name="app")
@nox.parametrize("database", DATABASES)
@nox.parametrize("django", DJANGO_VERSIONS)
def app(session: nox.Session, django: str, database: str) -> None:
    venv = ROOT / ".nox" / f"app-django{django}"
    python = venv / "bin" / "python"
    if not python.exists():
        session.run("python3", "-m", "venv", str(venv), external=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    session.run(*pip, ".[postgres,redis]", f"Django~={django}.0", *pinned(TEST_TOOLS), external=True)
    env = {"DJANGO_SETTINGS_MODULE": "tests.host.settings", "PYTHONDONTWRITEBYTECODE": "1"}
    name = None
    if database == "postgresql":
        server = os.environ.get("NOX_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
        name = f"nexpro_nox_{django.replace('.', '_')}_{os.getpid()}"
        env["DATABASE_URL"] = f"{server}/{name}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{venv}/host.sqlite3"
    session.run(
        str(python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not e2e and not project",
        *(f"--ignore={module}" for module in PROJECT_ONLY_MODULES),
        *session.posargs,
        env=env,
        external=True,
    )
