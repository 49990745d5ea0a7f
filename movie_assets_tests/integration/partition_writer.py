"""A Dagster run that writes one big release-month partition through the Postgres IO manager.

Run as a process (`python -m movie_assets_tests.integration.partition_writer MONTH ROWS`) so a
test can SIGKILL it in the middle of the write, as an OOM killer or a lost node would.
"""

import os
import sys

import dagster as dg
import numpy as np
import pandas as pd

from movie_assets.partitions import monthly_asset, partition_window
from movie_assets.resources.postgres import PostgresDatabase, PostgresIOManager, table_schema

TABLE = "reliability_partition"
COLUMNS = {"movie_id": "bigint", "title": "text", "release_month": "date"}


def build_asset(rows: int):
    @monthly_asset(
        io_manager_key="postgres_io_manager",
        metadata={"dagster/column_schema": table_schema(COLUMNS), "dagster/table_name": TABLE},
    )
    def big_month(context: dg.AssetExecutionContext) -> pd.DataFrame:
        start, _ = partition_window(context)
        context.log.info(f"writing {rows} rows for {start}")
        return pd.DataFrame({"movie_id": np.arange(rows, dtype="int64"), "title": "movie", "release_month": start})

    return big_month


def main(month: str, rows: int) -> int:
    database = PostgresDatabase(url=os.environ["MOVIE_DB_URL"], db_schema=os.environ["MOVIE_DB_SCHEMA"])
    result = dg.materialize(
        [build_asset(rows)],
        partition_key=month,
        instance=dg.DagsterInstance.ephemeral(),
        resources={"postgres_io_manager": PostgresIOManager(database=database)},
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
