"""The README's main command, `scripts/run`, brings up the whole stack on embedded
defaults (SQLite, filesystem broker, the simulator) and runs the demo through it."""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DEMO_ROW = re.compile(r"demo\.1\s+\|\s+(iCreations Global|Business 2)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)")


def run_the_stack(env: dict) -> tuple[str, list[tuple]]:
    """`scripts/run` until the demo is done, then Ctrl-C as a user stops it; the output
    and the demo's table rows (business, status, processed, created, updated, skipped, errors)."""
    process = subprocess.Popen(
        ["scripts/run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 150
        for line in process.stdout:
            output.append(line)
            if "[Demo] Done" in line or time.monotonic() > deadline:
                break
        # Give the narrator a moment to print its closing lines.
        time.sleep(0.5)
        text = "".join(output)
        assert "[Demo] Done" in text, text[-5000:]
        login_page = requests.get(f"http://{env['WEB_BIND']}/admin/login/", timeout=10)
        assert login_page.status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return text, DEMO_ROW.findall(text)


@pytest.mark.e2e
def test_main_command_runs_the_stack_and_the_demo_and_a_second_start_reports_its_own_runs(tmp_path):
    web_port, simulator_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SABITO_", "PYTEST", "DJANGO_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        REDIS_URL="",
        CELERY_BROKER_URL="",
        CELERY_BROKER_FOLDER=str(tmp_path / "broker"),
        WEB_BIND=f"127.0.0.1:{web_port}",
        SIMULATOR_PORT=str(simulator_port),
        SIMULATOR_STATE_FILE=str(tmp_path / "simulator-state.jsonl"),
        SABITO_API_URL=f"http://127.0.0.1:{simulator_port}",
        SABITO_API_KEY="sim-key",
        DEMO_CUSTOMERS="150",
    )

    text, rows = run_the_stack(env)

    assert "[Sabito Sync] Scheduler started: periodic sync on" in text
    assert "[Sabito Sync] Start-up sync queued" in text
    assert "[Sabito Sync] Sync completed for iCreations Global: { processed: 150, created: 150" in text
    # The demo's three steps, each with both businesses succeeding.
    assert [row[1] for row in rows] == ["succeeded"] * 6
    startup, incremental, full = rows[0:2], rows[2:4], rows[4:6]
    assert {row[3] for row in startup} == {"150"}  # everything created on the first sync
    assert all((row[3], row[4]) == ("3", "5") for row in incremental)  # 3 added, 5 edited
    assert all(row[2] == row[5] == "153" for row in full)  # all skipped

    # The same stack started again, as a user does the next day: its own start-up run
    # (nothing new: only the last changes again, re-read within the watermark's overlap),
    # and new edits and additions in "Sabito".
    text, rows = run_the_stack(env)

    assert [row[1] for row in rows] == ["succeeded"] * 6, text[-5000:]
    startup, incremental, full = rows[0:2], rows[2:4], rows[4:6]
    assert all((row[3], row[4], row[6]) == ("0", "0", "0") for row in startup), rows
    assert all((row[3], row[4]) == ("3", "5") for row in incremental)
    assert all(row[2] == row[5] == "156" for row in full)
    # Ctrl-C stops the worker without a pool process killed mid-task.
    assert "exited with signal" not in text


def procfile_commands() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def compose_services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_runs_the_same_commands_as_the_procfile():
    procfile, services = procfile_commands(), compose_services()

    # Under honcho keep-running restarts a worker that dies; compose does, by its policy.
    assert "python scripts/keep-running " + " ".join(services["worker"]["command"]) == procfile["worker"]
    assert services["worker"]["restart"] == "unless-stopped"
    assert " ".join(services["beat"]["command"]) == procfile["beat"]
    assert " ".join(services["web"]["command"]) == procfile["web"].replace(
        "${WEB_BIND:-127.0.0.1:8000}", "0.0.0.0:8000"
    )


def test_compose_reuses_one_image_definition_and_checks_service_health():
    services = compose_services()
    production, demo = ["migrate", "web", "worker", "beat"], ["simulator", "demo-setup"]

    assert {services[name]["image"] for name in production} == {"nexpro-sabito-sync:latest"}
    assert [services[name]["build"] for name in production] == [{"context": ".", "target": "production"}] * 4
    assert {services[name]["image"] for name in demo} == {"nexpro-sabito-sync:demo"}
    assert [services[name]["build"] for name in demo] == [{"context": ".", "target": "demo"}] * 2
    for name in ("postgres", "redis", "web", "worker", "beat"):
        assert "healthcheck" in services[name]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "celery -A nexpro inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])
    for name in ("postgres", "redis"):
        assert (
            services[name]["volumes"][0].split(":")[0]
            in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["volumes"]
        )
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["simulator"]["profiles"] == ["demo"]


def test_env_example_lists_every_setting_read_from_the_environment():
    settings_source = (ROOT / "nexpro" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z_]+)"', settings_source))
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))

    assert read - documented == set()
