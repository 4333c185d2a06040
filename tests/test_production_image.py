"""What goes into the production image, and the locked requirements it installs."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of a requirements or lock file's `name==version` lines."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[3]
    return found


def test_the_image_leaves_out_tests_benchmarks_the_simulator_and_the_demo():
    ignored = (ROOT / ".dockerignore").read_text().split()
    dockerfile = (ROOT / "Dockerfile").read_text()

    for folder in ("tests", "benchmarks", "docs", "scripts", ".ci"):
        assert folder in ignored
    source_stage = dockerfile.split("FROM base AS source", 1)[1].split("FROM ", 1)[0]
    for path in ("/src/sabito_simulator", "commands/sabito_simulator.py", "commands/sabito_demo.py"):
        assert path in source_stage
    # Nothing of the simulator or the demo is left inside the app package for the image to carry.
    assert not (ROOT / "sabito_sync" / "simulator.py").exists()
    assert not list((ROOT / "sabito_sync").rglob("sabito_demo.py"))
    assert "COPY --from=source /src /app" in dockerfile
    assert dockerfile.rstrip().splitlines()[-1] == "FROM app AS production"  # the default target


def test_the_image_installs_the_lock_with_hashes():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "COPY requirements.lock ." in dockerfile
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile


def test_every_direct_requirement_is_locked_at_its_pinned_version_without_the_dev_tools():
    direct, locked = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements.lock")

    assert {name: locked.get(name) for name in direct} == direct
    assert "honcho" not in locked and "pytest" not in locked
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if re.match(r"^[a-z0-9]", line, flags=re.I):
            assert line.endswith("\\"), f"{line} has no hashes"


def test_the_development_lock_agrees_with_the_runtime_lock():
    runtime, development = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")

    assert {name: development.get(name) for name in runtime} == runtime
    assert {"honcho", "pytest", "pip-tools", "pip-audit", "build"} <= set(development)


def test_gunicorn_takes_its_timeout_workers_and_max_requests_from_the_environment():
    read = (
        "import runpy; c = runpy.run_path('gunicorn.conf.py');"
        "print(c['timeout'], c['workers'], c['max_requests'], c['max_requests_jitter'])"
    )
    env = {"GUNICORN_TIMEOUT": "45", "GUNICORN_WORKERS": "5", "GUNICORN_MAX_REQUESTS": "200"}

    defaults = subprocess.run([sys.executable, "-c", read], cwd=ROOT, capture_output=True, text=True, env={})
    configured = subprocess.run([sys.executable, "-c", read], cwd=ROOT, capture_output=True, text=True, env=env)
    bad = subprocess.run(
        [sys.executable, "-c", read], cwd=ROOT, capture_output=True, text=True, env={"GUNICORN_WORKERS": "two"}
    )

    # Sized for a worker answering about 120 requests a second: recycled every 13-20 minutes.
    assert defaults.stdout.split() == ["30", "2", "100000", "50000"]
    assert configured.stdout.split() == ["45", "5", "200", "100"]  # the jitter: half of max_requests
    assert bad.returncode != 0 and "GUNICORN_WORKERS='two' is not a whole number" in bad.stderr


def test_a_bad_probe_address_stops_gunicorn_with_its_name():
    from nexpro.probes import listening_socket

    with pytest.raises(SystemExit, match="GUNICORN_PROBE_BIND='8081' is not host:port"):
        listening_socket("8081")
