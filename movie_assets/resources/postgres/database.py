"""PostgreSQL, the structured-data hub: the `PostgresDatabase` resource (connections, atomic window writes, reads).

Every write replaces a partition window atomically: DELETE the window, then COPY the new
rows, in one transaction. Re-runs never duplicate and a failed write leaves the previous
rows. How frames travel is in `arrow_copy.py`, how tables are created and extended in `schema.py`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql
from pydantic import field_validator

from movie_assets.partitions import month_number, months_in
from movie_assets.resources.postgres.arrow_copy import arrow_schema, arrow_to_frame, copy_frame
from movie_assets.resources.postgres.errors import PostgresError, PostgresSettingsError
from movie_assets.resources.postgres.schema import (
    add_missing_columns,
    ensure_table,
    existing_tables,
    qualified,
    schema_name_problem,
)
from movie_assets.settings import redact_text, redact_url

# The advisory locks of the objects several writers change, in the one order every writer takes them
# (a writer takes the ones it needs, never two in another order, so writers cannot deadlock):
# - `movies_raw` (per release month): a month's raw rows (crawl, change sync, restore);
# - `feature_store` (per release month): a month's feature rows in every store: its Parquet objects
#   (current and history), the `features` and `features_history` rows, the Redis hashes of its movies
#   (change sync, the removal outbox, movie_features, retention);
# - `online_store` (one lock): what Redis holds as a whole (online_features, the removal outbox).
# The table locks `replace_tables` takes for its own write come after all of them.
LOCK_ORDER = ("movies_raw", "feature_store", "online_store")
Locks = Mapping[str, "list[dt.date] | None"]  # lock name -> its months (None: the one lock of the object)


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


# How libpq words a connection that waiting will not open: nothing listens, no such host, the wrong password,
# user or database. Those fail the step at once (`PostgresSettingsError`). Anything else (a timeout, a server
# starting up, shutting down or out of connections, a message in the server's own language) stays a
# `PostgresError` that the retry policy retries: slower when wrong, never a lost retry.
NOT_HEALING = (
    "connection refused",
    "failed to resolve host",
    "could not translate host name",
    "no such file or directory",  # a Unix socket path
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
)


def heals_by_waiting(error: psycopg.Error) -> bool:
    return not any(words in str(error).lower() for words in NOT_HEALING)


class PostgresDatabase(dg.ConfigurableResource):
    """Connections to the data database (`MOVIE_DB_URL`, schema `MOVIE_DB_SCHEMA`)."""

    url: str
    db_schema: str = "public"

    @field_validator("db_schema")
    @classmethod
    def _plain_schema_name(cls, value: str) -> str:
        """Refused at load unless a plain lower-case name: it is a key of locks and SQL files, not only quoted."""
        if problem := schema_name_problem(value):
            raise ValueError(problem)
        return value

    @contextmanager
    def connect(self, purpose: str = "") -> Iterator[psycopg.Connection]:
        try:
            conn = psycopg.connect(self.url, connect_timeout=10)
        except psycopg.Error as exc:
            detail = redact_text(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
            error = PostgresError if heals_by_waiting(exc) else PostgresSettingsError
            raise error(
                f"PostgreSQL at {redact_url(self.url)} is unreachable{' while ' + purpose if purpose else ''}: "
                f"{detail}. Start it (`movie-platform up`) or fix MOVIE_DB_URL, then re-run; nothing was written."
            ) from None
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def ident(self, table: str) -> sql.Composed:
        return qualified(self.db_schema, table)

    def ensure_table(
        self, conn: psycopg.Connection, table: str, columns: Mapping[str, str], partition_column: str | None
    ) -> None:
        """`schema.ensure_table` in this database's schema."""
        ensure_table(conn, self.db_schema, table, columns, partition_column)

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
        """`schema.add_missing_columns` in this database's schema, inside the caller's transaction."""
        add_missing_columns(conn, self.db_schema, table, columns)

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

    def lock_in_order(self, conn: psycopg.Connection, locks: Locks) -> None:
        """Transaction locks on `locks` (names from LOCK_ORDER), taken in LOCK_ORDER; released at commit."""
        for name in _ordered(locks):
            self.lock_months(conn, name, locks[name])

    @contextmanager
    def holding(self, locks: Locks, purpose: str) -> Iterator[psycopg.Connection]:
        """Session locks on `locks`, taken in LOCK_ORDER and held until the block ends, across commits.

        For a writer whose stores change outside one PostgreSQL transaction (Parquet, Redis): the
        locks cover them all. The yielded connection is in autocommit: `conn.transaction()` on it is
        a real transaction. A killed holder's connection closes, and PostgreSQL frees its locks.
        """
        with self.connect(purpose) as conn:
            conn.autocommit = True
            for name in _ordered(locks):
                months = locks[name]
                numbers = sorted({month_number(m) for m in months}) if months is not None else [-1]
                for number in numbers:
                    conn.execute("select pg_advisory_lock(hashtext(%s), %s)", (f"{self.db_schema}.{name}", number))
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.execute("select pg_advisory_unlock_all()")

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
            return arrow_to_frame(pa.Table.from_pylist([], arrow_schema(columns)), columns)
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


def _ordered(locks: Locks) -> list[str]:
    unknown = sorted(set(locks) - set(LOCK_ORDER))
    if unknown:
        raise ValueError(f"locks {unknown} are not in LOCK_ORDER {LOCK_ORDER}: add them there, in their place")
    return [name for name in LOCK_ORDER if name in locks]
