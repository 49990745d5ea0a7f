"""The IO manager that stores an asset's DataFrame in its table, one partition window at a time, and the
table metadata every write reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd

from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, refuse_reversed_range
from movie_assets.resources.postgres.database import PostgresDatabase, TableRows, WithSideTables
from movie_assets.resources.postgres.schema import columns_of, table_schema

TABLE_NAME = "dagster/table_name"  # Dagster's documented metadata keys (the public face of TableMetadataSet)


class PostgresIOManager(dg.ConfigurableIOManager):
    """Stores an asset's DataFrame in the table named after the asset, one partition window at a time.

    The asset declares its columns as `dagster/column_schema` metadata (SQL types) and, when
    partitioned, the date column that holds the partition as `partition_expr` (Dagster's name for
    it in its database IO managers; default `release_month`). Another table than the asset key
    is named with `dagster/table_name` metadata.
    Partition ranges (single-run backfills) work the same way. Each write reports Dagster's table
    metadata (`dagster/table_name`, `dagster/partition_row_count`, `dagster/row_count`,
    `dagster/column_schema`): the qualified table name, the window's rows, the table's rows, the columns.
    """

    database: PostgresDatabase

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | WithSideTables) -> None:
        table, columns, partition_column, window = self._target(context)
        started = dt.datetime.now()
        frame, sides = (obj.frame, obj.side_tables) if isinstance(obj, WithSideTables) else (obj, [])
        written = self.database.replace_tables([TableRows(table, columns, frame), *sides], partition_column, window)
        rows = written[table]
        seconds = (dt.datetime.now() - started).total_seconds()
        context.add_output_metadata(
            {
                **table_metadata(self.database, table, columns, rows if window else None),
                **({"side_tables": ", ".join(f"{t}: {n}" for t, n in written.items() if t != table)} if sides else {}),
                "rows_per_second": round(rows / seconds) if seconds > 0 else rows,
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        if upstream is None:
            raise dg.DagsterInvariantViolationError(
                f"PostgresIOManager loads only asset outputs, but input {context.name!r} has no upstream output; "
                "give it an upstream asset (AssetIn) or load it with another IO manager"
            )
        table, columns, partition_column, window = self._target(upstream, context)
        # An input may read only some columns (`AssetIn(metadata={"columns": [...]})`, as Dagster's DB IO managers do).
        wanted = (context.definition_metadata or {}).get("columns")
        if wanted:
            unknown = [name for name in wanted if name not in columns]
            if unknown:
                raise dg.DagsterInvariantViolationError(
                    f"input {context.name!r} asks for columns {unknown} that table {table} does not have"
                )
            columns = {name: columns[name] for name in wanted}
        return self.database.read_rows(table, columns, partition_column, window)

    @staticmethod
    def _target(output: dg.OutputContext, input_context: dg.InputContext | None = None):
        metadata = output.definition_metadata or {}
        schema = metadata.get("dagster/column_schema")
        if schema is None:
            raise dg.DagsterInvariantViolationError(
                f"asset {output.asset_key.to_user_string()} stores to PostgreSQL but declares no dagster/column_schema"
            )
        columns = columns_of(schema.schema if hasattr(schema, "schema") else schema)
        named = metadata.get(TABLE_NAME)
        named = getattr(named, "value", named)  # a str, or its TextMetadataValue
        table = str(named).rsplit(".", 1)[-1] if named else output.asset_key.path[-1]
        partitioned = (input_context or output).has_asset_partitions
        partition_column = str(metadata.get("partition_expr") or "release_month") if partitioned else None
        window = None
        if partitioned:
            _refuse_a_reversed_run_range(input_context or output)
            time_window = (input_context or output).asset_partitions_time_window
            window = (time_window.start.date(), time_window.end.date())
        return table, columns, partition_column, window


def table_metadata(
    database: PostgresDatabase, table: str, columns: Mapping[str, str], partition_rows: int | None
) -> dict[str, Any]:
    """Dagster's table metadata of a write: qualified name, column schema, the table's rows, the window's rows."""
    metadata: dict[str, Any] = {
        TABLE_NAME: f"{database.db_schema}.{table}",
        "dagster/column_schema": table_schema(columns),
        "dagster/row_count": database.count_rows(table),
    }
    if partition_rows is not None:
        metadata["dagster/partition_row_count"] = partition_rows
    return metadata


def _refuse_a_reversed_run_range(context: dg.InputContext | dg.OutputContext) -> None:
    """Refuse the run's reversed range from its tags, before Dagster resolves the range (a `CheckError`)."""
    try:
        tags = context.step_context.dagster_run.tags
    except dg.DagsterInvariantViolationError:  # a context built outside a run (build_output_context)
        return
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        refuse_reversed_range(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
