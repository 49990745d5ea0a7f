"""Tables as the assets declare them: DDL on first write, columns added later, and what the catalog says exists.

Tables get explicit DDL from the asset's `dagster/column_schema`; a column the schema gains
later is added in the write's transaction, and a change that is a migration is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import dagster as dg
import psycopg
from psycopg import sql

from movie_assets.resources.postgres.arrow_copy import copyable_type
from movie_assets.resources.postgres.errors import PostgresError

# Longer names would be cut to 63 bytes by PostgreSQL, so two settings would share one schema.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def schema_name_problem(name: str) -> str | None:
    """Why MOVIE_DB_SCHEMA cannot be `name`: it is a key of locks and SQL files, not only quoted. None when fine."""
    if SCHEMA_NAME.fullmatch(name):
        return None
    return (
        "MOVIE_DB_SCHEMA must be a plain lower-case PostgreSQL name (a-z, 0-9 and _, not starting with a digit, "
        f"at most 63 characters), not {name!r}"
    )


def columns_of(schema: dg.TableSchema) -> dict[str, str]:
    """{column: SQL type} from a Dagster TableSchema whose column types are SQL types."""
    return {column.name: column.type for column in schema.columns}


def table_schema(columns: Mapping[str, str], descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[dg.TableColumn(n, t, description=descriptions.get(n)) for n, t in columns.items()])


def qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def ensure_table(
    conn: psycopg.Connection, schema: str, table: str, columns: Mapping[str, str], partition_column: str | None
) -> None:
    """Create schema, table and partition index when missing, and commit at once.

    Checking first means an existing table costs no DDL lock (CREATE INDEX IF NOT
    EXISTS would take a SHARE lock for the whole write), and a role without CREATE
    on the database still writes into an existing schema.
    """
    name = f"{_quote(schema)}.{_quote(table)}"
    if _table_exists(conn, name):
        return
    # Two first writers at once would race in CREATE ... IF NOT EXISTS (a unique violation in
    # pg_type): the second waits here, then sees the table.
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"ddl {schema}",))
    if _table_exists(conn, name):
        conn.commit()
        return
    if not conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone():
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    ddl = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns.items())
    conn.execute(sql.SQL("create table if not exists {} ({})").format(qualified(schema, table), ddl))
    if partition_column:
        conn.execute(
            sql.SQL("create index if not exists {} on {} ({})").format(
                sql.Identifier(f"{table}_{partition_column}_idx"),
                qualified(schema, table),
                sql.Identifier(partition_column),
            )
        )
    conn.commit()


def add_missing_columns(conn: psycopg.Connection, schema: str, table: str, columns: Mapping[str, str]) -> None:
    """Bring an existing table up to the declared columns, inside the write's transaction.

    `ensure_table` creates a table once; a column declared later would make COPY fail. New
    columns are added (`ADD COLUMN IF NOT EXISTS`, so two writers racing both succeed), and
    the rows already stored get NULL. What cannot be done safely is refused before any row
    changes: a type the COPY path cannot write, or an existing column declared with another
    type (that is a migration, not an addition). Writers that COPY on their own (features_history)
    call it in their transaction too.
    """
    stored = stored_column_types(conn, schema, table)
    changed = {n: (stored[n], t) for n, t in columns.items() if n in stored and _retyped(stored[n], t)}
    missing = {n: t for n, t in columns.items() if n not in stored}
    unmappable = {n: t for n, t in missing.items() if not copyable_type(t)}
    if changed or unmappable:
        problems = [f"{n} is {old} in the table but declared {new}" for n, (old, new) in changed.items()]
        problems += [f"{n} has type {t!r}: the IO manager cannot add it" for n, t in unmappable.items()]
        raise PostgresError(
            f"{schema}.{table} does not match its declared columns: {'; '.join(problems)}. "
            "Nothing was written. Migrate the table by hand (ALTER TABLE ... ALTER COLUMN ... TYPE) or "
            "rename the column in the asset's dagster/column_schema, then re-run."
        )
    for name, sql_type in missing.items():
        conn.execute(
            sql.SQL("alter table {} add column if not exists {} {}").format(
                qualified(schema, table), sql.Identifier(name), sql.SQL(sql_type)
            )
        )


def stored_column_types(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """{column: SQL type as PostgreSQL spells it} of an existing table (format_type: `integer[]`, ...)."""
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
        "where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped order by a.attnum",
        (f"{_quote(schema)}.{_quote(table)}",),
    ).fetchall()
    return {name: sql_type for name, sql_type in rows}


def existing_tables(conn: psycopg.Connection, schema: str, tables: list[str]) -> list[str]:
    """The tables of `tables` that exist in `schema` (the sync deletes from the ones that do)."""
    return [t for t in tables if _table_exists(conn, f"{_quote(schema)}.{_quote(t)}")]


def _retyped(stored: str, declared: str) -> bool:
    """True when a declared plain type differs from the stored one (declared constraints are not compared)."""
    return copyable_type(declared) and stored != declared


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _table_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (name,)).fetchone()
    assert row is not None, "a SELECT without FROM always returns one row"
    return bool(row[0])
