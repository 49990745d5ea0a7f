"""Frames to and from PostgreSQL through Arrow: COPY with CSV that Arrow writes (C speed on both sides), and
Arrow tables (from ADBC's binary COPY) back to pandas with nullable dtypes."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

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


def arrow_schema(columns: Mapping[str, str]) -> pa.Schema:
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


def copyable_type(sql_type: str) -> bool:
    """A plain type (or array of one) that `_to_arrow` writes and `ADD COLUMN` can add without a constraint."""
    return sql_type.removesuffix("[]") in ARROW_TYPES


def _pandas_type(arrow_type: pa.DataType):
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_floating(arrow_type):
        return pd.Float64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None
