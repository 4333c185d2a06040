"""A running run's proof of life: one thread per process touches the heartbeat of
each of its runs and reads whether a run was asked to stop."""

from __future__ import annotations

import logging
import os
import threading
import time

from django.db import DatabaseError, connection
from django.utils import timezone

from ..logs import LOG_PREFIX
from ..models import SyncRun

logger = logging.getLogger("sabito_sync.sync")


class RunPulse:
    """The run's proof of life, from a thread of its own: every `interval` seconds it
    touches the heartbeat, whatever the sync is waiting on (a slow Sabito page, a
    long write), so a dead worker shows within SABITO_STALE_RUN_AFTER rather than
    after the slowest page. It also reads whether the run was asked to stop (a
    cancel, its worker shutting down) or is no longer ours (taken over as stale);
    the sync looks at `stop_reason` between pages.

    The thread is the process's `Heartbeats`, shared by every run the process makes
    in turn (or at once): a run that ends before its first beat, as one finding
    nothing new does, costs no thread start."""

    CANCEL, SHUTDOWN, TAKEN_OVER = "cancel", SyncRun.StopReason.SHUTDOWN.value, "taken_over"

    def __init__(self, run: SyncRun, *, interval: float):
        self.run_id = run.pk
        self.interval = interval
        self.stop_reason: str | None = None

    def __enter__(self) -> RunPulse:
        Heartbeats.of_this_process().add(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        Heartbeats.of_this_process().remove(self)

    def beat_once(self) -> None:
        running = SyncRun.objects.filter(pk=self.run_id, status=SyncRun.Status.RUNNING)
        if not running.update(heartbeat_at=timezone.now()):
            # Not running any more (taken over as stale); a row this connection cannot
            # see at all is one not committed yet, and says nothing.
            if SyncRun.objects.filter(pk=self.run_id).exists():
                self.stop_reason = self.TAKEN_OVER
            return
        requested_at, reason = running.values_list("cancel_requested_at", "stop_reason").first() or (None, "")
        if requested_at is not None:
            self.stop_reason = self.SHUTDOWN if reason == self.SHUTDOWN else self.CANCEL


class Heartbeats:
    """One daemon thread per process that beats for each of the process's live
    `RunPulse`s when it is due, on a database connection of its own (closed whenever
    no run is live, as a thread per run closed its own). Made in the process that
    uses it: a worker's pool processes each get their own after the fork."""

    _current: Heartbeats | None = None
    _current_lock = threading.Lock()

    @classmethod
    def of_this_process(cls) -> Heartbeats:
        with cls._current_lock:
            if cls._current is None or cls._current.pid != os.getpid():
                cls._current = cls()
            return cls._current

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._due: dict[RunPulse, float] = {}  # pulse → when it next beats (monotonic)
        # Reentrant: `stop_all` may run in a signal handler while this thread holds it.
        self._changed = threading.Condition(threading.RLock())
        self._beating: RunPulse | None = None
        self._thread: threading.Thread | None = None
        # Set while this process is being stopped: runs that start meanwhile stop at once.
        self.stopping: str | None = None

    def stop_all(self, *, reason: str = RunPulse.SHUTDOWN) -> None:
        """Ask every live run of this process to stop after its page, at once (no
        database round trip: the process itself was told to stop). Safe in a signal
        handler: the condition's lock is reentrant."""
        with self._changed:
            self.stopping = reason
            for pulse in self._due:
                if pulse.stop_reason is None:
                    pulse.stop_reason = reason

    def stop_none(self) -> None:
        """Runs that start from now on run (the stop request was for the task that is over)."""
        with self._changed:
            self.stopping = None

    def add(self, pulse: RunPulse) -> None:
        with self._changed:
            if self.stopping is not None:
                pulse.stop_reason = self.stopping
            self._due[pulse] = time.monotonic() + pulse.interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sabito-heartbeat", daemon=True)
                self._thread.start()
            self._changed.notify()

    def remove(self, pulse: RunPulse) -> None:
        """Forget `pulse`; once this returns its run is not touched again."""
        with self._changed:
            self._due.pop(pulse, None)
            while self._beating is pulse:
                self._changed.wait()

    def _run(self) -> None:
        connected = False
        while True:
            with self._changed:
                pulse = self._next_due(connection_open=connected)
            if pulse is None:
                connection.close()  # no live run: give the connection back until one starts
                connected = False
                continue
            connected = True
            try:
                pulse.beat_once()
            except DatabaseError as exc:
                # SQLite busy with the page being written, or a blip: the next beat
                # tries again, and only a run of missed beats makes the run look dead.
                logger.warning("%s Heartbeat of run %s missed: %s", LOG_PREFIX, pulse.run_id, exc)
                connection.close()
            except Exception:  # the thread beats for every run of the process: it must go on
                logger.exception("%s Heartbeat of run %s failed", LOG_PREFIX, pulse.run_id)
            finally:
                with self._changed:
                    self._beating = None
                    self._changed.notify_all()

    def _next_due(self, *, connection_open: bool) -> RunPulse | None:
        """Wait, holding the condition, for the next pulse due and mark it beating;
        None when there is no live run and the connection is to be closed."""
        while True:
            if not self._due:
                if connection_open:
                    return None
                self._changed.wait()
                continue
            pulse, due = min(self._due.items(), key=lambda item: item[1])
            delay = due - time.monotonic()
            if delay <= 0:
                self._due[pulse] = time.monotonic() + pulse.interval
                self._beating = pulse
                return pulse
            self._changed.wait(delay)
