"""The storage checks of the release months one chooses, launched from the UI: job `monthly_checks`.

Dagster 1.13's *Checks* tab cannot run a partitioned check alone ("Executing checks on their own
for partitioned assets is not yet supported"), and an asset job of checks only gets no partitions
(it takes them from its assets), so no UI path offers a month. This op job is partitioned by
release month: its *Launchpad* picks the month (and, by op selection, the checks), its
*Partitions* tab launches several. Each op logs its check's evaluation of the month, targeting
the month's newest materialization, as the asset's own check step would: the result shows on
the asset's *Checks* tab and lifts or sets the automation's hold.
"""

import datetime as dt

import dagster as dg

from movie_assets.checks import (
    CHECK_JOB,
    MONTHLY_CHECKS,
    FailedCheck,
    MonthlyCheck,
    held_months_failure,
    log_month_check,
    months_to_check,
)
from movie_assets.partitions import release_month_partitions
from movie_assets.resources.postgres import PostgresDatabase


def check_op(check: MonthlyCheck) -> dg.OpDefinition:
    """One op per check, named `<asset>__<check>`, so the Launchpad's op selection can run any one of them."""

    @dg.op(name=f"{check.asset}__{check.name}", description=f"{check.asset}: {check.description}")
    def evaluate(context: dg.OpExecutionContext, database: PostgresDatabase) -> None:
        held: dict[dt.date, list[FailedCheck]] = {}
        for month in months_to_check(context, check.asset):
            failed = log_month_check(context, database, check, month)
            if failed:
                held[month] = [failed]
        if held:
            raise held_months_failure(check.asset, held, CHECK_JOB, did="checked")

    return evaluate


CHECK_OPS = [check_op(check) for check in MONTHLY_CHECKS]


@dg.job(
    name=CHECK_JOB,
    partitions_def=release_month_partitions,
    description="The storage checks (movie_assets/checks.py) of the chosen release month, without materializing: "
    "results on each asset's Checks tab",
    # Ten small queries per month: one process, not a step process per check.
    config={"execution": {"config": {"in_process": {}}}},
)
def monthly_checks():
    for op in CHECK_OPS:
        op()
