"""PostgreSQL: the structured-data hub. One resource for connections, one IO manager for tables.

Every write replaces a partition window atomically: DELETE the window, then COPY the
new rows, in one transaction. Re-runs never duplicate and a failed write leaves the
previous rows. Bulk paths go through COPY with CSV built by Arrow (C speed on both
sides); tables get explicit DDL from the asset's `dagster/column_schema`, and a column the
schema gains later is added in the write's transaction.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from dagster._core.definitions.metadata.metadata_set import TableMetadataSet  # not exported by `dagster` in 1.13
from psycopg import sql
from pydantic import field_validator

from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, month_number, months_in, refuse_reversed_range
from movie_assets.settings import redact_text, redact_url

COPY_BATCH_ROWS = 50_000
ARROW_TYPES = {
    "bigint": pa.int64(),
    "integer": pa.int64(),
    "smallint": pa.int64(),
    "double precision": pa.float64(),
    "real": pa.float64(),
    "text": pa.string(),
    "date": pa.date32(),
    "boolean": pa.bool_(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "jsonb": pa.string(),
}


# Longer names would be cut to 63 bytes by PostgreSQL, so two settings would share one schema.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class TableRows:
    """Rows for one table: what `replace_tables` writes, and how an asset hands its side tables to the IO manager."""

    table: str
    columns: Mapping[str, str]
    frame: pd.DataFrame


@dataclass(frozen=True)
class WithSideTables:
    """An asset's output frame plus side tables of the same partitions, written in the same transaction."""

    frame: pd.DataFrame
    side_tables: list[TableRows]


class PostgresError(RuntimeError):
    """PostgreSQL could not be reached or refused a write; names the table and partition."""


def columns_of(schema: dg.TableSchema) -> dict[str, str]:
    """{column: SQL type} from a Dagster TableSchema whose column types are SQL types."""
    return {column.name: column.type for column in schema.columns}


def table_schema(columns: Mapping[str, str], descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[dg.TableColumn(n, t, description=descriptions.get(n)) for n, t in columns.items()])


class PostgresDatabase(dg.ConfigurableResource):
    """Connections to the data database (`MOVIE_DB_URL`, schema `MOVIE_DB_SCHEMA`)."""

    url: str
    db_schema: str = "public"

    @field_validator("db_schema")
    @classmethod
    def _plain_schema_name(cls, value: str) -> str:
        """Refused at load unless a plain lower-case name: it is a key of locks and SQL files, not only quoted."""
        if not SCHEMA_NAME.fullmatch(value):
            raise ValueError(
                f"MOVIE_DB_SCHEMA must be a plain lower-case PostgreSQL name (a-z, 0-9 and _, not starting "
                f"with a digit, at most 63 characters), not {value!r}"
            )
        return value

    @contextmanager
    def connect(self, purpose: str = "") -> Iterator[psycopg.Connection]:
        try:
            conn = psycopg.connect(self.url, connect_timeout=10)
        except psycopg.Error as exc:
            detail = redact_text(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
            raise PostgresError(
                f"PostgreSQL at {redact_url(self.url)} is unreachable{' while ' + purpose if purpose else ''}: "
                f"{detail}. Start it (`movie-platform up`) or fix MOVIE_DB_URL, then re-run; nothing was written."
            ) from None
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def ident(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.db_schema), sql.Identifier(table))

    def ensure_table(
        self, conn: psycopg.Connection, table: str, columns: Mapping[str, str], partition_column: str | None
    ) -> None:
        """Create schema, table and partition index when missing, and commit at once.

        Checking first means an existing table costs no DDL lock (CREATE INDEX IF NOT
        EXISTS would take a SHARE lock for the whole write), and a role without CREATE
        on the database still writes into an existing schema.
        """
        qualified = f"{_quote(self.db_schema)}.{_quote(table)}"
        if _table_exists(conn, qualified):
            return
        # Two first writers at once would race in CREATE ... IF NOT EXISTS (a unique violation in
        # pg_type): the second waits here, then sees the table.
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"ddl {self.db_schema}",))
        if _table_exists(conn, qualified):
            conn.commit()
            return
        schema_exists = conn.execute("select 1 from pg_namespace where nspname = %s", (self.db_schema,)).fetchone()
        if not schema_exists:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(self.db_schema)))
        ddl = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns.items())
        conn.execute(sql.SQL("create table if not exists {} ({})").format(self.ident(table), ddl))
        if partition_column:
            conn.execute(
                sql.SQL("create index if not exists {} on {} ({})").format(
                    sql.Identifier(f"{table}_{partition_column}_idx"),
                    self.ident(table),
                    sql.Identifier(partition_column),
                )
            )
        conn.commit()

    def replace_rows(
        self,
        table: str,
        columns: Mapping[str, str],
        frame: pd.DataFrame,
        partition_column: str | None = None,
        window: tuple[dt.date, dt.date] | None = None,
    ) -> int:
        """Replace the rows of `window` (or the whole table) with `frame` in one transaction."""
        return self.replace_tables([TableRows(table, columns, frame)], partition_column, window)[table]

    def replace_tables(
        self,
        writes: list[TableRows],
        partition_column: str | None = None,
        window: tuple[dt.date, dt.date] | None = None,
    ) -> dict[str, int]:
        """Replace the `window` rows (or all rows) of several tables in ONE transaction: a step's table and
        its side tables (rejects, genres, drops) change together or not at all."""
        label = ", ".join(w.table for w in writes) + (f" {window[0]}..{window[1]}" if window else "")
        for write in writes:
            self._refuse_rows_outside(write, partition_column, window)
        with self.connect(f"writing {label}") as conn:
            for write in writes:
                self.ensure_table(conn, write.table, write.columns, partition_column)
            with conn.transaction():
                for write in sorted(writes, key=lambda w: w.table):  # one lock order for every writer
                    self._lock_months(conn, write.table, window if partition_column else None)
                for write in writes:  # before any row changes: a refusal leaves the table as it was
                    self.add_missing_columns(conn, write.table, write.columns)
                for write in writes:
                    if window and partition_column:
                        conn.execute(
                            sql.SQL("delete from {} where {col} >= %s and {col} < %s").format(
                                self.ident(write.table), col=sql.Identifier(partition_column)
                            ),
                            (window[0], window[1]),
                        )
                    else:
                        conn.execute(sql.SQL("delete from {}").format(self.ident(write.table)))
                    copy_frame(conn, self.ident(write.table), write.columns, write.frame)
        return {write.table: len(write.frame) for write in writes}

    def add_missing_columns(self, conn: psycopg.Connection, table: str, columns: Mapping[str, str]) -> None:
        """Bring an existing table up to the declared columns, inside the write's transaction.

        `ensure_table` creates a table once; a column declared later would make COPY fail. New
        columns are added (`ADD COLUMN IF NOT EXISTS`, so two writers racing both succeed), and
        the rows already stored get NULL. What cannot be done safely is refused before any row
        changes: a type the COPY path cannot write, or an existing column declared with another
        type (that is a migration, not an addition). Writers that COPY on their own (features_history)
        call it in their transaction too.
        """
        stored = stored_column_types(conn, self.db_schema, table)
        changed = {n: (stored[n], t) for n, t in columns.items() if n in stored and _retyped(stored[n], t)}
        missing = {n: t for n, t in columns.items() if n not in stored}
        unmappable = {n: t for n, t in missing.items() if not _copyable_type(t)}
        if changed or unmappable:
            problems = [f"{n} is {old} in the table but declared {new}" for n, (old, new) in changed.items()]
            problems += [f"{n} has type {t!r}: the IO manager cannot add it" for n, t in unmappable.items()]
            raise PostgresError(
                f"{self.db_schema}.{table} does not match its declared columns: {'; '.join(problems)}. "
                "Nothing was written. Migrate the table by hand (ALTER TABLE ... ALTER COLUMN ... TYPE) or "
                "rename the column in the asset's dagster/column_schema, then re-run."
            )
        for name, sql_type in missing.items():
            conn.execute(
                sql.SQL("alter table {} add column if not exists {} {}").format(
                    self.ident(table), sql.Identifier(name), sql.SQL(sql_type)
                )
            )

    @staticmethod
    def _refuse_rows_outside(write: TableRows, partition_column: str | None, window) -> None:
        if not (window and partition_column and len(write.frame)):
            return
        values = pd.to_datetime(write.frame[partition_column]).values
        outside = write.frame[(values < np.datetime64(window[0])) | (values >= np.datetime64(window[1]))]
        if len(outside):
            raise PostgresError(
                f"{len(outside)} rows for {write.table} have {partition_column} outside {window[0]}..{window[1]} "
                f"(e.g. {outside[partition_column].iloc[0]}); refusing a write the next re-run would lose."
            )

    def _lock_months(self, conn: psycopg.Connection, table: str, window: tuple[dt.date, dt.date] | None) -> None:
        """Serialize writers of the same months of a table until commit (transaction advisory locks).

        Without it two overlapping backfills both delete, then both insert: the month ends up
        twice. With it the second waits, then its DELETE (a new statement, a new snapshot) sees
        and replaces the first one's rows. Months are locked in order, so writers never deadlock.
        """
        self.lock_months(conn, table, [start for start, _ in months_in(window)] if window else None)

    def lock_months(self, conn: psycopg.Connection, table: str, months: list[dt.date] | None) -> None:
        """The advisory locks of `replace_rows` for any set of months (None: the whole table), in month order."""
        numbers = [month_number(month) for month in months] if months is not None else [-1]
        for month in sorted(set(numbers)):
            conn.execute("select pg_advisory_xact_lock(hashtext(%s), %s)", (f"{self.db_schema}.{table}", month))

    def count_rows_in(self, table: str, partition_column: str, window: tuple[dt.date, dt.date]) -> int:
        """Rows of the window (0 when the table does not exist yet)."""
        with self.connect(f"counting {table} {window[0]}..{window[1]}") as conn:
            if not existing_tables(conn, self.db_schema, [table]):
                return 0
            query = sql.SQL("select count(*) from {} where {col} >= %s and {col} < %s").format(
                self.ident(table), col=sql.Identifier(partition_column)
            )
            row = conn.execute(query, window).fetchone()
        return int(row[0]) if row else 0

    def count_rows(self, table: str) -> int:
        """Rows in the whole table (`dagster/row_count`); the written window's rows are `partition_row_count`."""
        with self.connect(f"counting {table}") as conn:
            row = conn.execute(sql.SQL("select count(*) from {}").format(self.ident(table))).fetchone()
        assert row is not None, "count(*) always returns one row"
        return int(row[0])

    def read_rows(
        self,
        table: str,
        columns: Mapping[str, str],
        partition_column: str | None = None,
        window: tuple[dt.date, dt.date] | None = None,
    ) -> pd.DataFrame:
        label = f"{table} {window[0]}..{window[1]}" if window else table
        select = sql.SQL(", ").join(sql.Identifier(n) for n in columns)
        query = sql.SQL("select {} from {}").format(select, self.ident(table))
        if window and partition_column:
            query += sql.SQL(" where {col} >= {start} and {col} < {end}").format(
                col=sql.Identifier(partition_column), start=sql.Literal(window[0]), end=sql.Literal(window[1])
            )
        table_data = self.read_arrow(query.as_string(None), label)
        if table_data is None:  # the table was never written: nothing to read yet
            return arrow_to_frame(pa.Table.from_pylist([], _arrow_schema(columns)), columns)
        return arrow_to_frame(table_data, columns)

    def read_arrow(self, query: str, label: str = "") -> pa.Table | None:
        """Run a query through ADBC: libpq's binary COPY decoded into Arrow in C, no per-row Python.

        Returns None when the table does not exist (SQLSTATE 42P01).
        """
        import adbc_driver_postgresql.dbapi as adbc

        try:
            with adbc.connect(self.url) as conn, conn.cursor() as cursor:
                cursor.execute(query)
                return cursor.fetch_arrow_table()
        except adbc.ProgrammingError as exc:
            # Only a missing table means "not written yet"; a missing column is a real error.
            if getattr(exc, "sqlstate", None) == "42P01" or re.search(r'relation "[^"]+" does not exist', str(exc)):
                return None
            raise
        except adbc.Error as exc:
            raise PostgresError(
                f"PostgreSQL at {redact_url(self.url)} failed while reading {label}: "
                f"{redact_text(str(exc).splitlines()[0])}. "
                "Check that it runs (`movie-platform doctor`) and that MOVIE_DB_URL is right."
            ) from None


def copy_frame(
    conn: psycopg.Connection, target: sql.Composable, columns: Mapping[str, str], frame: pd.DataFrame
) -> None:
    """COPY a frame into `target` as CSV written by Arrow (nulls unquoted, strings quoted).

    The CSV is produced and sent batch by batch, so the server parses one batch while
    the client formats the next: on two cores that overlap is most of the speed.
    """
    if frame.empty:
        return
    table = _to_arrow(frame, columns)
    names = sql.SQL(", ").join(sql.Identifier(n) for n in columns)
    statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(target, names)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    with conn.cursor().copy(statement) as copy:
        for batch in table.to_batches(max_chunksize=COPY_BATCH_ROWS):
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, options)
            copy.write(buffer.getbuffer())


def arrow_to_frame(table: pa.Table, columns: Mapping[str, str]) -> pd.DataFrame:
    """Nullable pandas dtypes for numbers and booleans; arrays as Python lists; jsonb as JSON text."""
    frame = table.to_pandas(types_mapper=_pandas_type)
    for name, sql_type in columns.items():
        if sql_type.endswith("[]"):
            frame[name] = [v.tolist() if v is not None else None for v in frame[name]]
    return frame


def _arrow_schema(columns: Mapping[str, str]) -> pa.Schema:
    def arrow_type(sql_type: str) -> pa.DataType:
        if sql_type.endswith("[]"):
            return pa.list_(arrow_type(sql_type[:-2]))
        return ARROW_TYPES.get(sql_type, pa.string())

    return pa.schema([(name, arrow_type(t)) for name, t in columns.items()])


def _to_arrow(frame: pd.DataFrame, columns: Mapping[str, str]) -> pa.Table:
    arrays = []
    for name, sql_type in columns.items():
        values = frame[name]
        if sql_type.endswith("[]"):
            arrays.append(pa.array([_pg_array(v) for v in values], pa.string()))
        elif sql_type == "jsonb":
            arrays.append(
                pa.array(
                    [v if v is None or isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in values],
                    pa.string(),
                )
            )
        elif sql_type == "date":
            days = pd.to_datetime(values).values.astype("datetime64[D]")
            arrays.append(pa.array(days, pa.date32(), mask=pd.isna(days)))
        elif sql_type == "timestamp with time zone":
            arrays.append(pa.array(pd.to_datetime(values, utc=True), pa.timestamp("us", tz="UTC")))
        else:
            arrays.append(pa.array(values, ARROW_TYPES.get(sql_type, pa.string()), from_pandas=True))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _pg_array(values) -> str | None:
    if values is None or (isinstance(values, float) and pd.isna(values)):
        return None
    items = []
    for v in values:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            items.append("NULL")
        elif isinstance(v, str):
            items.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            items.append(str(v))
    return "{" + ",".join(items) + "}"


def stored_column_types(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """{column: SQL type as PostgreSQL spells it} of an existing table (format_type: `integer[]`, ...)."""
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
        "where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped order by a.attnum",
        (f"{_quote(schema)}.{_quote(table)}",),
    ).fetchall()
    return {name: sql_type for name, sql_type in rows}


def _copyable_type(sql_type: str) -> bool:
    """A plain type (or array of one) that `_to_arrow` writes and `ADD COLUMN` can add without a constraint."""
    return sql_type.removesuffix("[]") in ARROW_TYPES


def _retyped(stored: str, declared: str) -> bool:
    """True when a declared plain type differs from the stored one (declared constraints are not compared)."""
    return _copyable_type(declared) and stored != declared


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def existing_tables(conn: psycopg.Connection, schema: str, tables: list[str]) -> list[str]:
    """The tables of `tables` that exist in `schema` (the sync deletes from the ones that do)."""
    return [t for t in tables if _table_exists(conn, f"{_quote(schema)}.{_quote(t)}")]


def _table_exists(conn: psycopg.Connection, qualified: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (qualified,)).fetchone()
    assert row is not None, "a SELECT without FROM always returns one row"
    return bool(row[0])


def _pandas_type(arrow_type: pa.DataType):
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_floating(arrow_type):
        return pd.Float64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None


class PostgresIOManager(dg.ConfigurableIOManager):
    """Stores an asset's DataFrame in the table named after the asset, one partition window at a time.

    The asset declares its columns as `dagster/column_schema` metadata (SQL types) and, when
    partitioned, the date column that holds the partition as `partition_expr` (Dagster's name for
    it in its database IO managers; default `release_month`). Another table than the asset key
    is named with `dagster/table_name` (`TableMetadataSet(table_name=...)`).
    Partition ranges (single-run backfills) work the same way. Each write reports
    `TableMetadataSet`: the qualified table name, the rows of the written window, the table's
    rows and the column schema.
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
        named = TableMetadataSet.extract(metadata).table_name
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
) -> TableMetadataSet:
    """Dagster's table metadata of a write: qualified name, column schema, the table's rows, the window's rows."""
    return TableMetadataSet(
        table_name=f"{database.db_schema}.{table}",
        column_schema=table_schema(columns),
        row_count=database.count_rows(table),
        partition_row_count=partition_rows,
    )


def _refuse_a_reversed_run_range(context: dg.InputContext | dg.OutputContext) -> None:
    """Refuse the run's reversed range from its tags, before Dagster resolves the range (a `CheckError`)."""
    try:
        tags = context.step_context.dagster_run.tags
    except dg.DagsterInvariantViolationError:  # a context built outside a run (build_output_context)
        return
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        refuse_reversed_range(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
