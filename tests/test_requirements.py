"""The requirement files install as a user installs them: `pip install -r` each into a
fresh virtualenv, with the pip that `venv` bundles; and the locks name no machine's
package sources."""

import re
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def on_postgresql() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


@pytest.mark.e2e
@pytest.mark.parametrize("requirements", ["requirements.txt", "requirements-dev.txt"])
def test_each_requirements_file_installs_into_a_fresh_virtualenv(requirements, tmp_path):
    if on_postgresql():
        pytest.skip("installing does not depend on the database: the SQLite lane runs it")
    folder = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(folder)
    python = folder / "bin" / "python"

    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )

    assert installed.returncode == 0, installed.stderr[-5000:]
    checked = subprocess.run(
        [str(python), "-m", "pip", "check", "--disable-pip-version-check"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
    imported = subprocess.run(
        [str(python), "-c", "import django, rest_framework, celery, django_celery_beat, psycopg, gunicorn"],
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_the_locks_name_no_package_source_and_say_how_they_were_made(lock):
    text = (ROOT / lock).read_text()
    source_options = re.findall(r"^--(?:extra-index-url|index-url|find-links|trusted-host)\b.*$", text, re.M)
    command = re.search(r"^#    (pip-compile .*)$", text, re.M)

    assert source_options == []
    assert command is not None and "--generate-hashes" in command.group(1)
    assert f"--output-file={lock}" in command.group(1)
    assert "--no-emit-index-url" in command.group(1) and "--no-emit-find-links" in command.group(1)


def test_scripts_lock_runs_the_commands_the_locks_record():
    script = (ROOT / "scripts" / "lock").read_text()
    for lock in ("requirements.lock", "requirements-dev.lock"):
        recorded = re.search(r"^#    (pip-compile .*)$", (ROOT / lock).read_text(), re.M).group(1)
        for option in recorded.split()[1:]:
            # Every recorded option and file is one the script passes (options through its array).
            assert option in script or option.split("=")[0] in script, (lock, option)


def test_the_development_requirements_carry_no_hashed_constraints():
    """A `-c` of a hashed lock inside requirements-dev.txt turns on pip's hash-checking
    for the file's own unhashed pins: `pip install -r` failed in a fresh virtualenv."""
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()

    assert not [line for line in lines if line.startswith(("-c", "--constraint"))]
    assert "-r requirements.txt" in lines
