"""Rebuild `movies_raw` partitions from the raw backup in the object store (after a lost database).

A month crawled again since its last backup holds newer rows than the backup. Restoring it would
put the older rows back, so by default the job refuses before writing anything and names those
months; `restore_older_backups: true` restores them anyway, with the same list in the log and
the op's metadata. Refusing is the default because a restore replaces the month: after a lost
database no month is newer (the table is empty), so a newer month almost always means the job
points at a live table by mistake, and the opt-in costs one config line.

Each restored month passes the storage checks of a crawl (`checks.py`), logged against its
materialization: one that fails a blocking check is held by automation, and the job fails once
every month is restored.
"""

import datetime as dt
import gzip
import json
import re

import dagster as dg
import pandas as pd
from psycopg import sql
from pydantic import Field

from movie_assets.checks import FailedCheck, held_months_failure, log_checked_materializations
from movie_assets.domain.movie_records import RAW_COLUMNS, to_frame, validate
from movie_assets.object_layout import RAW_BACKUP_PATH, RAW_BACKUP_PREFIX
from movie_assets.partitions import month_window
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.postgres import PostgresDatabase, existing_tables

MONTH_FOLDER = re.compile(r"release_month=(\d{4}-\d{2})$")


class RestoreConfig(dg.Config):
    first_month: str = Field(
        default="", description="first partition to restore (YYYY-MM-01); empty = the earliest backup"
    )
    last_month: str = Field(default="", description="last partition to restore, inclusive; empty = the latest backup")
    restore_older_backups: bool = Field(
        default=False,
        description="also restore months whose backup is older than the rows in movies_raw (re-crawled since "
        "the backup); by default the job refuses before writing and names them",
    )


def backed_up_months(store: ObjectStore) -> list[str]:
    """Partition keys that have a backup object, oldest first."""
    folder = store.root / RAW_BACKUP_PREFIX
    if not folder.exists():
        return []
    months = [m.group(1) + "-01" for p in folder.iterdir() if (m := MONTH_FOLDER.search(p.name))]
    return sorted(m for m in months if store.path_for(RAW_BACKUP_PATH, m).exists())


def newest_fetch_per_month(database: PostgresDatabase, months: list[str]) -> dict[str, pd.Timestamp]:
    """{month: newest fetched_at in movies_raw} for the months that have rows (none when the table is gone)."""
    if not months:
        return {}
    with database.connect("reading the newest fetch per month of movies_raw") as conn:
        if not existing_tables(conn, database.db_schema, ["movies_raw"]):
            return {}
        rows = conn.execute(
            sql.SQL(
                "select release_month, max(fetched_at) from {} where release_month >= %s and release_month < %s "
                "group by release_month"
            ).format(database.ident("movies_raw")),
            (dt.date.fromisoformat(months[0]), month_window(dt.date.fromisoformat(months[-1]))[1]),
        ).fetchall()
    return {month.isoformat(): pd.Timestamp(newest) for month, newest in rows if newest is not None}


def backup_newest_fetch(data: bytes) -> pd.Timestamp | None:
    """The newest `fetched_at` in a backup object: when the crawl it holds ran."""
    times = [json.loads(line)["fetched_at"] for line in gzip.decompress(data).decode().splitlines()]
    return max(pd.Timestamp(t) for t in times) if times else None


def older_than_table(
    backup_newest: dict[str, pd.Timestamp | None], table_newest: dict[str, pd.Timestamp]
) -> dict[str, tuple[pd.Timestamp | None, pd.Timestamp]]:
    """{month: (backup's newest fetched_at, table's newest fetched_at)} where the table holds a newer crawl."""
    older = {}
    for key, backup in backup_newest.items():
        stored = table_newest.get(key)
        if stored is not None and (backup is None or backup < stored):
            older[key] = (backup, stored)
    return older


def describe_older(older: dict[str, tuple[pd.Timestamp | None, pd.Timestamp]]) -> str:
    return "; ".join(f"{key[:7]} (backup {backup}, table {stored})" for key, (backup, stored) in older.items())


def rows_from_backup(data: bytes, partition_key: str) -> pd.DataFrame:
    window = month_window(dt.date.fromisoformat(partition_key))
    rows = []
    for line in gzip.decompress(data).decode().splitlines():
        record = json.loads(line)
        row, reason = validate(record["payload"], window)
        if row is None:
            raise ValueError(f"backup of {partition_key} holds an invalid record {record['movie_id']}: {reason}")
        row["fetched_at"] = pd.Timestamp(record["fetched_at"])
        rows.append(row)
    return to_frame(rows, RAW_COLUMNS)


@dg.op(description="Reads raw/tmdb/release_month=*/movies.jsonl.gz and replaces those movies_raw partitions.")
def restore_movies_raw(
    context: dg.OpExecutionContext, config: RestoreConfig, database: PostgresDatabase, object_store: ObjectStore
) -> None:
    months = [
        m
        for m in backed_up_months(object_store)
        if (not config.first_month or m >= config.first_month) and (not config.last_month or m <= config.last_month)
    ]
    if not months:
        raise dg.Failure(f"no raw backups found under {object_store.root} for the requested months")
    paths = {key: object_store.path_for(RAW_BACKUP_PATH, key) for key in months}
    # A first pass reads only the fetch times: the refusal comes before any month is replaced, and the
    # months' rows are not all held in memory at once.
    backup_newest = {key: backup_newest_fetch(path.read_bytes()) for key, path in paths.items()}
    older = older_than_table(backup_newest, newest_fetch_per_month(database, months))
    if older and not config.restore_older_backups:
        raise dg.Failure(
            f"refusing to restore movies_raw: {len(older)} month(s) were crawled again after their backup, so "
            f"the backup is older than the table: {describe_older(older)}. Nothing was restored. Restore only "
            "other months (first_month/last_month), back those months up again (materialize movies_raw_backup), "
            "or set restore_older_backups: true to put the older rows back.",
            metadata={"older_than_table": ", ".join(older), "restored_months": ""},
            allow_retries=False,
        )
    if older:
        context.log.warning(
            f"restoring {len(older)} month(s) whose backup is older than movies_raw (restore_older_backups is set); "
            f"their newer rows are replaced: {describe_older(older)}"
        )
    held: dict[dt.date, list[FailedCheck]] = {}
    for key, path in paths.items():
        frame = rows_from_backup(path.read_bytes(), key)
        database.replace_rows(
            "movies_raw", RAW_COLUMNS, frame, "release_month", month_window(dt.date.fromisoformat(key))
        )
        metadata = {"restored_from": str(paths[key]), "rows": len(frame), "backup_older_than_table": key in older}
        month = dt.date.fromisoformat(key)
        held.update(log_checked_materializations(context, database, "movies_raw", {month: metadata}))
        context.log.info(f"restored {len(frame)} movies of {key[:7]} from {paths[key]}")
    context.add_output_metadata(
        {"restored_months": ", ".join(months), "older_than_table": describe_older(older) or "none"}
    )
    if held:  # every month is restored and logged; the ones a blocking check failed wait for a fix
        raise held_months_failure("movies_raw", held, "The restore")


@dg.job(description="Rebuild movies_raw from the object-store backup (all backed-up months unless configured).")
def restore_movies_raw_from_backup():
    restore_movies_raw()
