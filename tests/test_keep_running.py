"""`scripts/keep-running`, which restarts the worker under `scripts/run` (honcho)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import wait_for

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "keep-running"

# Dies the first two times it runs (as a worker stopped by an unrecoverable error
# would), then stays up, counting its starts in a file.
FLAKY = """
import pathlib, sys, time
starts = pathlib.Path(sys.argv[1])
count = int(starts.read_text() or 0) + 1 if starts.exists() else 1
starts.write_text(str(count))
if count <= 2:
    sys.exit(3)
time.sleep(600)
"""


def start(tmp_path, starts):
    log = open(tmp_path / "keep-running.log", "w")  # noqa: SIM115 (written until it stops)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), sys.executable, "-c", FLAKY, str(starts)],
        env={**os.environ, "KEEP_RUNNING_FIRST_DELAY": "0.1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # as honcho starts each process
    )


def starts_counted(starts) -> int:
    return int(starts.read_text() or 0) if starts.exists() else 0


def test_a_command_that_dies_is_started_again_and_a_stop_is_final(tmp_path):
    starts = tmp_path / "starts"
    process = start(tmp_path, starts)
    try:
        wait_for(lambda: starts_counted(starts) == 3, timeout=60, message="the third start")

        os.killpg(process.pid, signal.SIGTERM)  # what honcho sends on Ctrl-C

        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        assert starts_counted(starts) == 3  # not started again once told to stop
        log = (tmp_path / "keep-running.log").read_text()
        assert log.count("exited with code 3; starting it again") == 2
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_a_stop_sent_to_keep_running_alone_reaches_the_command(tmp_path):
    starts = tmp_path / "starts"
    starts.write_text("2")  # the next start stays up
    process = start(tmp_path, starts)
    try:
        wait_for(lambda: starts_counted(starts) == 3, timeout=60, message="the command to start")

        process.send_signal(signal.SIGINT)  # to keep-running's process only

        assert process.wait(timeout=60) == 128 + signal.SIGTERM  # it stopped the command with SIGTERM
        assert starts_counted(starts) == 3
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
