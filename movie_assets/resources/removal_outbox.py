"""Removals outside PostgreSQL (feature Parquet, Redis hashes): recorded with the rows, applied after the commit.

The change sync deletes a removed movie's rows and, in the same transaction, adds the movie to
`store_outbox`. Only once that commit stands does `apply_removals` drop the movie from its month's
feature Parquet objects (current and history) and delete its Redis hash; a month's entries leave
the outbox once both are done. So a failed commit changes no store, a crash after it leaves the
entries for the next sync, and applying twice changes nothing.

It holds the month's `feature_store` lock and the `online_store` lock (LOCK_ORDER), so neither
movie_features nor online_features can write the movie back from rows they read before.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable

import pandas as pd
import psycopg
from psycopg import sql

from movie_assets.feature_definitions import import_feast
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.object_store import ObjectStore, write_atomically
from movie_assets.resources.online_writer import delete_entities
from movie_assets.resources.postgres import PostgresDatabase, copy_frame, existing_tables

OUTBOX_TABLE = "store_outbox"
OUTBOX_COLUMNS = {
    "movie_id": "bigint",
    "release_month": "date",  # where its feature rows were: the Parquet objects to rewrite
    "recorded_at": "timestamp with time zone",
}


def record_removals(conn: psycopg.Connection, database: PostgresDatabase, removed: list[dict]) -> None:
    """Inside the caller's transaction: the removed movies (`movie_id`, `release_month`) join the outbox.

    The caller ensured the table (OUTBOX_TABLE, OUTBOX_COLUMNS) before its transaction began.
    """
    frame = pd.DataFrame(
        {
            "movie_id": pd.Series([r["movie_id"] for r in removed], dtype="int64"),
            "release_month": [r["release_month"] for r in removed],
            "recorded_at": pd.Timestamp.now(tz="UTC"),
        }
    )
    copy_frame(conn, database.ident(OUTBOX_TABLE), OUTBOX_COLUMNS, frame)


def pending_removals(database: PostgresDatabase) -> dict[dt.date, set[int]]:
    """Release month -> movies whose removal is committed but not yet applied outside PostgreSQL."""
    with database.connect("reading the removal outbox") as conn:
        if not existing_tables(conn, database.db_schema, [OUTBOX_TABLE]):
            return {}
        rows = conn.execute(
            sql.SQL("select release_month, movie_id from {}").format(database.ident(OUTBOX_TABLE))
        ).fetchall()
    pending: dict[dt.date, set[int]] = {}
    for month, movie_id in rows:
        pending.setdefault(month, set()).add(movie_id)
    return pending


def apply_removals(
    database: PostgresDatabase, object_store: ObjectStore, feast: FeastStore, log: Callable[[str], object]
) -> dict[str, int]:
    """Apply every pending removal (this sync's and any a crash left), then empty the outbox of them."""
    pending = pending_removals(database)
    if not pending:
        return {"removals_applied": 0, "parquet_rows_dropped": 0, "online_keys_deleted": 0}
    ids = sorted(set().union(*pending.values()))
    with database.holding(
        {"feature_store": sorted(pending), "online_store": None}, "applying the removal outbox"
    ) as conn:
        dropped = sum(drop_from_parquet(object_store, month, movies) for month, movies in sorted(pending.items()))
        deleted = delete_online(feast, ids)
        conn.execute(sql.SQL("delete from {} where movie_id = any(%s)").format(database.ident(OUTBOX_TABLE)), (ids,))
    log(f"applied {len(ids)} removals after their commit: {dropped} Parquet rows, {deleted} online keys")
    return {"removals_applied": len(ids), "parquet_rows_dropped": dropped, "online_keys_deleted": deleted}


def drop_from_parquet(object_store: ObjectStore, month: dt.date, movie_ids: set[int]) -> int:
    """The movies leave every feature Parquet object of their month (current and history); rows dropped."""
    folder = object_store.path_for(FEATURES_OBJECT_PATH, month.isoformat()).parent
    dropped = 0
    for path in sorted(folder.rglob("*.parquet")) if folder.exists() else []:
        frame = pd.read_parquet(io.BytesIO(path.read_bytes()))
        kept = frame[~frame["movie_id"].isin(movie_ids)].reset_index(drop=True)
        if len(kept) != len(frame):
            write_atomically(path, kept.to_parquet(index=False))
            dropped += len(frame) - len(kept)
    return dropped


def delete_online(feast: FeastStore, movie_ids: list[int]) -> int:
    """Their Redis hashes go; with the feature view never applied, nothing was ever served."""
    import_feast()
    from feast.errors import FeatureViewNotFoundException

    store = feast.store()
    try:
        view = store.get_feature_view("movie_features")
    except FeatureViewNotFoundException:
        return 0
    return delete_entities(store, view, movie_ids)
