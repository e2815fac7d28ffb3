"""Assets by domain: simulation (session_log), lake (raw_events, book_states), dbt (marts)."""

import dagster as dg

OWNER = "team:qrsdp"


def blocking_check(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    """A blocking check of a Python asset (Dagster checks have no owner field: it goes to metadata)."""
    return dg.AssetCheckSpec(
        name, asset=asset, blocking=True, metadata={"owner": OWNER}, description=description
    )


def check_result(name: str, problems: list[str], partitions: int) -> dg.AssetCheckResult:
    """One result for a run's partitions: passed when no partition had a problem (listed otherwise)."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=not problems,
        metadata={"partitions": partitions, "problems": dg.MetadataValue.md("\n".join(problems) or "none")},
    )
