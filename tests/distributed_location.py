"""The Dagster code location of the distributed tests (served by the stack's code server): QRSDP's
own definitions, plus a tiny test job.

One job, ``hold_until_released``: its op says which worker runs it, then waits until an object
``releases/<release_key>`` appears in the bucket, and writes ``results/<run id>.json`` (the worker,
its process, working directory and Dagster home). The wait is what makes fault tests deterministic:
a test sees the op's first event, kills the worker holding it, and only then releases, so the run
cannot have finished before the kill. S3 goes through ``dagster-aws``'s S3 resource, configured
from the environment each worker gets from ``infra/stack.sh`` (QRSDP_S3_ENDPOINT, AWS_*).
"""

import json
import os
import time

import dagster as dg
from dagster_aws.s3 import S3Resource

RELEASE_PREFIX = "releases/"
RESULT_PREFIX = "results/"
WAITING_MESSAGE = "waiting for release"


class HoldConfig(dg.Config):
    release_key: str
    timeout_s: int = 600


@dg.op
def hold(context: dg.OpExecutionContext, config: HoldConfig, s3: S3Resource) -> None:
    bucket = os.environ.get("QRSDP_S3_BUCKET", "exchange-data")
    client = s3.get_client()
    worker = context.run.tags.get("qrsdp/celery_worker", "?")
    context.log.info(f"{WAITING_MESSAGE} {config.release_key} on worker {worker} (pid {os.getpid()})")
    deadline = time.monotonic() + config.timeout_s
    while True:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=RELEASE_PREFIX + config.release_key)
        if any(o["Key"] == RELEASE_PREFIX + config.release_key for o in listed.get("Contents", [])):
            break
        if time.monotonic() > deadline:
            raise dg.Failure(f"not released within {config.timeout_s} s")
        time.sleep(0.5)
    result = {
        "run_id": context.run_id,
        "worker": worker,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "dagster_home": os.environ.get("DAGSTER_HOME"),
        "data_dir": os.environ.get("QRSDP_DATA_DIR"),
    }
    client.put_object(Bucket=bucket, Key=f"{RESULT_PREFIX}{context.run_id}.json", Body=json.dumps(result))
    context.log.info(f"released: {json.dumps(result)}")


@dg.job
def hold_until_released() -> None:
    hold()


def _location() -> dg.Definitions:
    """QRSDP's own definitions (settings from the stack's environment: sessions on S3, the marts in a
    DuckLake), so one stack serves the pipeline tests too, plus the test job. Built in a function:
    Dagster refuses a module with more than one Definitions object at module scope."""
    from qrsdp_dagster.definitions import defs as qrsdp

    hold_defs = dg.Definitions(
        jobs=[hold_until_released],
        resources={
            "s3": S3Resource(
                endpoint_url=dg.EnvVar("QRSDP_S3_ENDPOINT"),
                region_name="us-east-1",
                use_ssl=False,
            )
        },
    )
    return dg.Definitions.merge(qrsdp, hold_defs)


defs = _location()
