"""Expectations on stored tables, as queries: each returns what violates it (empty = holds).

Shared by the data tests on the demo's tables and by the test that corrupts a copy of them,
so the same code is shown to fail on bad data.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql

from movie_assets.resources.postgres import stored_column_types


def _table(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def schema_differences(
    conn: psycopg.Connection, schema: str, table: str, declared: Mapping[str, str]
) -> dict[str, tuple[str | None, str | None]]:
    """{column: (stored type, declared type)} for every column missing, extra or of another type."""
    stored = stored_column_types(conn, schema, table)
    return {
        name: (stored.get(name), declared.get(name))
        for name in {*stored, *declared}
        if stored.get(name) != declared.get(name)
    }


def outside_range(
    conn: psycopg.Connection, schema: str, table: str, column: str, low: float | None, high: float | None
) -> list[int]:
    """movie_ids whose `column` is NaN or outside [low, high] (NULL is the null-ratio test's business)."""
    conditions = [sql.SQL("{c} = 'NaN'::float8").format(c=sql.Identifier(column))]
    if low is not None:
        conditions.append(sql.SQL("{c} < {v}").format(c=sql.Identifier(column), v=sql.Literal(low)))
    if high is not None:
        conditions.append(sql.SQL("{c} > {v}").format(c=sql.Identifier(column), v=sql.Literal(high)))
    query = sql.SQL("select movie_id from {} where {} order by 1 limit 20").format(
        _table(schema, table), sql.SQL(" or ").join(conditions)
    )
    return [row[0] for row in conn.execute(query)]


def duplicate_keys(conn: psycopg.Connection, schema: str, table: str, key: list[str]) -> list[tuple]:
    """Key values stored more than once (at most 20)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, key))
    query = sql.SQL("select {k} from {t} group by {k} having count(*) > 1 order by 1 limit 20").format(
        k=columns, t=_table(schema, table)
    )
    return [tuple(row) for row in conn.execute(query)]


def null_ratios_over(
    conn: psycopg.Connection, schema: str, table: str, limits: Mapping[str, float]
) -> dict[str, float]:
    """{column: NULL ratio} for the columns whose ratio exceeds its limit."""
    ratios = sql.SQL(", ").join(
        sql.SQL("coalesce(avg(({} is null)::int), 0)::float8").format(sql.Identifier(c)) for c in limits
    )
    row = conn.execute(sql.SQL("select {} from {}").format(ratios, _table(schema, table))).fetchone()
    assert row is not None, "an aggregate always returns one row"
    return {c: ratio for (c, limit), ratio in zip(limits.items(), row, strict=True) if ratio > limit}


def row_count(conn: psycopg.Connection, schema: str, table: str) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(_table(schema, table))).fetchone()
    assert row is not None
    return int(row[0])
