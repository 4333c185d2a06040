"""Every signal receiver of the app, Celery's and Django's: thin interfaces that hand
what happened to the services. Connected once the app is ready (`apps.py`), in every
process (web, worker, beat, commands)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from celery.signals import (
    beat_init,
    task_failure,
    task_postrun,
    task_prerun,
    task_success,
    worker_process_init,
    worker_shutting_down,
)
from django.apps import AppConfig

from .logs import LOG_PREFIX
from .models import SabitoMapping
from .runs import ticks
from .runs.heartbeat import Heartbeats
from .runs.reaper import request_stop_of_worker_runs
from .runs.result import SyncResult
from .services import alerts, schedule
from .services.queueing import SYNC_MAPPING_TASK
from .signals import sync_finished

logger = logging.getLogger("sabito_sync.receivers")


def on_post_migrate(sender: AppConfig, app_config: AppConfig | None = None, **kwargs: Any) -> None:
    """After `migrate`: the app's beat rows (connected for this app's config only)."""
    if app_config is None or app_config.label != "sabito_sync":
        return
    # The system checks report invalid settings; migrating must still work.
    schedule.ensure_schedules(periodic_sync_required=False)


@beat_init.connect
def on_beat_start(sender: Any = None, **kwargs: Any) -> None:
    """Beat runs once per stack (it must: it has no lock of its own), so its start is
    the one moment that is "the stack started" rather than "a worker process
    started": apply any changed schedule settings and queue the start-up sync here;
    the workers pick it up as soon as they are up."""
    task = schedule.ensure_schedules(periodic_sync_required=True)
    assert task is not None  # required: invalid settings raise
    logger.info("%s Scheduler started: periodic sync %s", LOG_PREFIX, "on" if task.enabled else "off")
    schedule.queue_startup_sync(periodic_sync_enabled=task.enabled)


@worker_shutting_down.connect
def stop_this_workers_runs(sender: Any = None, **kwargs: Any) -> None:
    """A worker told to stop (SIGTERM, Ctrl-C, `docker compose stop`) waits for its
    tasks. Ask its syncs to stop once the pages they have fetched are written, as
    interrupted (the reaper queues them again), so it exits within seconds instead of
    minutes. The signal fires in the worker's main process, the syncs run in its
    children: the request goes through their runs' rows, which their heartbeat
    threads read."""
    if not sender:
        return
    # The solo and thread pools run their syncs in this very process: at once.
    Heartbeats.of_this_process().stop_all()
    try:
        asked = request_stop_of_worker_runs(worker=str(sender))
    except Exception:  # a shutdown must go on whatever the database says
        logger.exception("%s Could not ask this worker's syncs to stop", LOG_PREFIX)
        return
    if asked:
        logger.warning(
            "%s Worker %s shutting down: %d running syncs asked to stop after their page", LOG_PREFIX, sender, asked
        )


class PoolProcessStop:
    """A prefork pool process's answer to the stop signals while it runs a task.

    `honcho`, a terminal's Ctrl-C and an init that forwards signals send them to the
    worker's whole process group, so the pool processes get them beside the worker.
    Left to billiard, SIGTERM makes a pool process exit in the middle of its task (the
    run lost, a `WorkerLostError` logged) and SIGINT is ignored (the run stops only once
    its heartbeat reads the worker's request). Here, the first SIGTERM or SIGINT during
    a task asks the process's runs to stop after their page, as interrupted (the reaper
    resumes them), and the task returns as usual; the worker, told too, waits for it and
    then closes its pool. A second signal gets billiard's own answer: a stop that does
    not wait."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.in_pool_process = False
        self.told = False
        self.previous: dict[int, Any] = {}

    def task_started(self) -> None:
        if not self.in_pool_process or threading.current_thread() is not threading.main_thread():
            return
        self.told = False
        for signum in self.SIGNALS:
            self.previous[signum] = signal.signal(signum, self.on_signal)

    def task_ended(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
        if self.told:
            self.told = False
            Heartbeats.of_this_process().stop_none()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.told:
            self.told = True
            Heartbeats.of_this_process().stop_all()
            return
        previous = self.previous.get(signum, signal.SIG_DFL)
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)


pool_process_stop = PoolProcessStop()


@worker_process_init.connect
def on_pool_process_start(**kwargs: Any) -> None:
    pool_process_stop.in_pool_process = True


@task_prerun.connect
def on_task_start(**kwargs: Any) -> None:
    pool_process_stop.task_started()


@task_postrun.connect
def on_task_end(**kwargs: Any) -> None:
    pool_process_stop.task_ended()


def counted_mapping(sender: Any, args: Any, kwargs: Any) -> tuple[str | None, str | None]:
    """(tick id, mapping id) of a finished sync_mapping task that belongs to a tick."""
    if getattr(sender, "name", None) != SYNC_MAPPING_TASK or not (kwargs or {}).get(ticks.TICK_KWARG):
        return None, None
    mapping_id = args[0] if args else kwargs.get("mapping_id")
    return kwargs[ticks.TICK_KWARG], mapping_id


@task_success.connect
def on_mapping_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    # A retry raises Retry and sends task_retry instead: the mapping is not finished yet.
    request = getattr(sender, "request", None)
    tick_id, mapping_id = counted_mapping(sender, getattr(request, "args", None), getattr(request, "kwargs", None))
    if tick_id:
        ticks.count_safely(tick_id=tick_id, mapping_id=mapping_id, result=result)


@task_failure.connect
def on_mapping_task_failure(sender: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    tick_id, mapping_id = counted_mapping(sender, args, kwargs)
    if tick_id:
        ticks.count_safely(tick_id=tick_id, mapping_id=mapping_id, result=None)


def on_sync_finished(sender: type[SabitoMapping], *, mapping: SabitoMapping, result: SyncResult, **kwargs: Any) -> None:
    """The alert webhook, when this run's outcome calls for one."""
    alerts.alert_after_run(mapping=mapping, result=result)


sync_finished.connect(on_sync_finished, dispatch_uid="sabito_sync.alerts.on_sync_finished")
