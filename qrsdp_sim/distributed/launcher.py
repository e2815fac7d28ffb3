"""The run launcher of the distributed profile: ``dagster_celery``'s Celery run launcher, plus liveness.

:class:`QrsdpCeleryRunLauncher` is :class:`dagster_celery.launcher.CeleryRunLauncher` (each run is one
Celery task ``execute_job`` on the ``dagster`` queue; any worker of :mod:`qrsdp_sim.distributed.worker`
takes it and executes the whole run in its pool process) with one change: the health check that
Dagster's run monitoring calls also asks whether the worker holding a ``STARTED`` task still sends
heartbeats (:mod:`.heartbeat`). The stock check reads only the task state, which stays ``STARTED``
forever once the worker is killed, so a ``kill -9``-ed worker's run would hang until its maximum
runtime; with the heartbeat it is failed within the heartbeat's time-to-live plus one monitoring
interval, and Dagster's run retries hand it to another worker.
"""

from __future__ import annotations

from typing import Any

from dagster import Field, IntSource
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from qrsdp_sim.distributed import heartbeat

DEFAULT_HEARTBEAT_TTL_S = 60
# Run tags the workers add (qrsdp_sim.distributed.worker): which worker executes the run.
WORKER_TAG = "qrsdp/celery_worker"
WORKER_PID_TAG = "qrsdp/celery_worker_pid"


class QrsdpCeleryRunLauncher(CeleryRunLauncher):
    """Celery run launcher whose health check notices a dead worker (see the module docstring)."""

    def __init__(self, *args: Any, heartbeat_ttl_seconds: int = DEFAULT_HEARTBEAT_TTL_S, **kwargs: Any):
        self.heartbeat_ttl_seconds = int(heartbeat_ttl_seconds)
        super().__init__(*args, **kwargs)

    @classmethod
    def config_type(cls):
        return {
            **super().config_type(),
            "heartbeat_ttl_seconds": Field(
                IntSource,
                is_required=False,
                default_value=DEFAULT_HEARTBEAT_TTL_S,
                description="A worker whose heartbeat is older than this is dead; its started run fails.",
            ),
        }

    def redis_client(self) -> Any:
        """The redis-py client of the result backend (the heartbeats live in the same Redis)."""
        client = getattr(self.celery.backend, "client", None)
        if client is None:
            raise RuntimeError(
                f"the Celery result backend {self.backend!r} is not Redis: worker heartbeats need a "
                "redis:// backend (QRSDP_REDIS_URL)"
            )
        return client

    def _task_worker(self, run: DagsterRun) -> tuple[str, dict[str, Any]] | None:
        """(state, STARTED meta) of the run's Celery task, or None without a task id."""
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if not task_id:
            return None
        result = self.celery.AsyncResult(task_id)
        info = result.info if isinstance(result.info, dict) else {}
        return result.state, info

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        task = self._task_worker(run)
        if task is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run has no Celery task id tag")
        state, info = task
        if state != "STARTED":
            return super().check_run_worker_health(run)
        worker = info.get("hostname")
        if not worker:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        if heartbeat.read(self.redis_client(), worker) is None:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"Celery worker {worker} (pid {info.get('pid')}) executing this run sent no heartbeat "
                f"for {self.heartbeat_ttl_seconds} s: it was killed, crashed or lost Redis.",
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or DAGSTER_CELERY_TASK_ID_TAG not in run.tags:
            return False  # never handed to Celery: nothing to revoke
        return super().terminate(run_id)

    def get_run_worker_debug_info(self, run: DagsterRun, include_container_logs: bool | None = True) -> str:
        task = self._task_worker(run)
        if task is None:
            return f"run {run.run_id}: no Celery task id"
        state, info = task
        worker = info.get("hostname")
        last = heartbeat.read(self.redis_client(), worker) if worker else None
        return str(
            {
                "run_id": run.run_id,
                "celery_task_id": run.tags.get(DAGSTER_CELERY_TASK_ID_TAG),
                "task_status": state,
                "worker": worker,
                "worker_pid": info.get("pid"),
                "last_heartbeat": last,
            }
        )
