"""The Celery application of a distributed worker process.

    DAGSTER_HOME=<this worker's home> celery -A qrsdp_sim.distributed.worker worker \\
        -n qrsdp-w1@%h -Q dagster --pool prefork --concurrency 1 --max-tasks-per-child 1

The Celery settings come from the worker's own Dagster instance (``$DAGSTER_HOME/dagster.yaml``,
written by :mod:`.profile`): the app *is* the run launcher's app, so broker, backend, queue and
transport options cannot drift between the side that sends runs and the side that runs them.

On top of ``dagster_celery``'s ``execute_job`` / ``resume_job`` tasks this module

- lets the pool process that executes a run start processes of its own. Celery's prefork pool
  (billiard) installs its own daemonic process object as the standard library's current process, so
  Dagster's default multiprocess executor (one process per step) fails there with "daemonic processes
  are not allowed to have children", and then with "Pickling an AuthenticationString object is
  disallowed" (billiard's key type). A pool process is a run worker: to the standard library it is the
  main process of its own tree, so each one gets a fresh ``_MainProcess`` when it starts. (The solo
  pool needs no such step but runs the run in the process that must keep beating, answering the
  broker and honouring revokes; prefork keeps that process free and gives each run a fresh process.)
- keeps the worker's heartbeat alive in Redis from the main process (:mod:`.heartbeat`);
- tags each run with the worker that executes it (``qrsdp/celery_worker``, ``qrsdp/celery_worker_pid``)
  and writes an engine event saying so, with the worker's working directory and Dagster home, so the
  UI and tests can see which worker ran what.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

from celery import signals
from dagster import DagsterInstance
from dagster._serdes import unpack_value
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from qrsdp_sim.distributed.heartbeat import HeartbeatThread
from qrsdp_sim.distributed.launcher import DEFAULT_HEARTBEAT_TTL_S, WORKER_PID_TAG, WORKER_TAG

log = logging.getLogger(__name__)


def _launcher() -> CeleryRunLauncher:
    if not os.environ.get("DAGSTER_HOME"):
        raise RuntimeError(
            "DAGSTER_HOME is not set: a worker reads its Celery settings from $DAGSTER_HOME/dagster.yaml"
        )
    # The storages use NullPool engines (no connection is open when the pool forks its children).
    instance = DagsterInstance.get()
    launcher = instance.run_launcher
    if not isinstance(launcher, CeleryRunLauncher):
        raise RuntimeError(
            f"$DAGSTER_HOME/dagster.yaml ({os.environ['DAGSTER_HOME']}) has run launcher "
            f"{type(launcher).__name__}, not a Celery run launcher: write it with "
            "`python -m qrsdp_sim.distributed.profile write $DAGSTER_HOME`"
        )
    return launcher


launcher = _launcher()
app = launcher.celery
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
_heartbeat: HeartbeatThread | None = None


# The standard library's main-process class (its module deletes the name), taken from the worker's
# main process, which billiard leaves alone.
_STDLIB_MAIN_PROCESS = type(multiprocessing.current_process())


@signals.worker_process_init.connect
def _allow_step_processes(**_: Any) -> None:
    """In each pool process: a standard-library main-process object (see the module docstring)."""
    multiprocessing.process._current_process = _STDLIB_MAIN_PROCESS()  # type: ignore[attr-defined]


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    ttl = getattr(launcher, "heartbeat_ttl_seconds", DEFAULT_HEARTBEAT_TTL_S)
    name = sender.hostname
    _heartbeat = HeartbeatThread(
        app.backend.client, name, ttl, extra={"dagster_home": os.environ.get("DAGSTER_HOME", "")}
    )
    _heartbeat.start()
    log.info("worker %s: heartbeat every %.0f s (ttl %d s)", name, ttl / 4, ttl)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@signals.task_prerun.connect
def _tag_run_with_worker(sender: Any = None, task: Any = None, kwargs: Any = None, **_: Any) -> None:
    """Before ``execute_job`` runs: record on the run which worker executes it (best effort)."""
    if task is None or task.name not in (execute_job.name, resume_job.name):
        return
    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None:
        return
    try:
        args = unpack_value(packed)
        worker = task.request.hostname or "unknown"
        with DagsterInstance.get() as instance:
            run = instance.get_run_by_id(args.run_id)
            if run is None:
                return
            instance.add_run_tags(run.run_id, {WORKER_TAG: worker, WORKER_PID_TAG: str(os.getpid())})
            instance.report_engine_event(
                f"Run picked up by Celery worker {worker} (pid {os.getpid()}, working directory "
                f"{os.getcwd()}, DAGSTER_HOME {os.environ.get('DAGSTER_HOME')})",
                run,
            )
    except Exception:  # tagging is informative: never stop the run for it
        log.exception("could not tag the run with its worker")
