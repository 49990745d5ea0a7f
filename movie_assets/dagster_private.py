"""The only place the platform touches Dagster's private API, and the Dagster version it was checked against.

Why private at all: Dagster 1.13 exports `DefaultRunLauncher`, but not the types of the run launcher's
own interface (`LaunchRunContext`, `CheckRunHealthResult`, `WorkerStatus`), nor the gRPC client with
which a launcher asks a code server which runs it is executing. `automation/run_launcher.py` (an
instance plugin, imported by the daemon and the webserver too), `automation/executor.py` and
`movie-platform doctor` need them to tell a dead run from a live one. The op jobs that write
`movies_raw` (sync, restore) log check evaluations that target the materialization they just
logged (`AssetCheckEvaluationTargetMaterializationData`), and the automation reads each
partition's newest check evaluation (`latest_check_per_partition`): neither has a public name in
1.13. Everything else uses public
API (the Postgres IO manager's table metadata is written under Dagster's documented `dagster/*`
keys, not through `TableMetadataSet`, which `dagster` does not export).

A Dagster upgrade has this module to re-check: `check_dagster_version` runs at import and refuses a
Dagster other than `DAGSTER_PRIVATE_VERSION`, naming what to re-run; the pin in setup.py matches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult, GetCurrentRunsResult
from dagster._serdes import deserialize_value

# The Dagster release whose private names and behaviour above were checked (setup.py pins the same).
DAGSTER_PRIVATE_VERSION = "1.13.27"

__all__ = [
    "DAGSTER_PRIVATE_VERSION",
    "GRPC_INFO_TAG",
    "AssetCheckEvaluationTargetMaterializationData",
    "CheckOfPartition",
    "CanCancelExecutionRequest",
    "CanCancelExecutionResult",
    "CheckRunHealthResult",
    "DagsterGrpcClient",
    "DagsterPrivateApiError",
    "DagsterUserCodeUnreachableError",
    "GetCurrentRunsResult",
    "LaunchRunContext",
    "WorkerStatus",
    "check_dagster_version",
    "deserialize_value",
    "latest_check_per_partition",
]


class DagsterPrivateApiError(RuntimeError):
    """The installed Dagster is not the one whose private API this module was checked against."""


def check_dagster_version(installed: str | None = None) -> None:
    installed = installed or dagster.__version__
    if installed != DAGSTER_PRIVATE_VERSION:
        raise DagsterPrivateApiError(
            f"Dagster {installed} is installed, but movie_assets/dagster_private.py (the run launcher's and "
            f"executor's private Dagster API) was checked against Dagster {DAGSTER_PRIVATE_VERSION}. Install "
            f"dagster=={DAGSTER_PRIVATE_VERSION} (the pin in setup.py), or re-check those names against Dagster "
            f"{installed} (run movie_assets_tests/integration/test_dead_runs.py and test_daemon.py) and then "
            "update DAGSTER_PRIVATE_VERSION."
        )


@dataclass(frozen=True)
class CheckOfPartition:
    """The newest evaluation (or plan) of one check on one partition."""

    check_key: dagster.AssetCheckKey
    partition: str | None
    status: str  # PLANNED, SUCCEEDED or FAILED
    run_id: str  # the run that planned or logged it ("" for a runless report)
    target_storage_id: int | None  # the materialization it checked (None while planned)


def latest_check_per_partition(
    instance: dagster.DagsterInstance, check_keys: Sequence[dagster.AssetCheckKey], partitions: Sequence[str]
) -> list[CheckOfPartition]:
    """Each check's newest row per partition among `partitions`: one query per check key.

    Dagster's public API has the newest evaluation of a check over all partitions only.
    """
    infos = instance.event_log_storage.get_asset_check_partition_info(list(check_keys), partition_keys=partitions)
    return [
        CheckOfPartition(
            check_key=info.check_key,
            partition=info.partition_key,
            status=info.latest_execution_status.value,
            run_id=info.latest_planned_run_id,
            target_storage_id=info.latest_target_materialization_storage_id,
        )
        for info in infos
    ]


check_dagster_version()
