"""The distributed Dagster profile: instance on PostgreSQL, runs handed to Celery workers over Redis.

- :mod:`.profile`   -- the instance settings (``dagster.yaml``) rendered from ``QRSDP_*`` variables
- :mod:`.launcher`  -- the Celery run launcher with worker liveness (heartbeats in Redis)
- :mod:`.worker`    -- the Celery application a worker process runs (``celery -A qrsdp_sim.distributed.worker``)
- :mod:`.heartbeat` -- the Redis keys that say a worker is alive

Nothing here is imported by the embedded default; see docs/data-platform.md ("Beyond one machine").
"""
