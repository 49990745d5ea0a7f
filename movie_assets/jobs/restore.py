"""Rebuild `movies_raw` partitions from the raw backup in the object store (after a lost database)."""

import datetime as dt
import gzip
import json
import re

import dagster as dg
import pandas as pd
from pydantic import Field

from movie_assets.domain.movie_records import RAW_COLUMNS, to_frame, validate
from movie_assets.object_layout import RAW_BACKUP_PATH, RAW_BACKUP_PREFIX
from movie_assets.partitions import month_window
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.postgres import PostgresDatabase

MONTH_FOLDER = re.compile(r"release_month=(\d{4}-\d{2})$")


class RestoreConfig(dg.Config):
    first_month: str = Field(
        default="", description="first partition to restore (YYYY-MM-01); empty = the earliest backup"
    )
    last_month: str = Field(default="", description="last partition to restore, inclusive; empty = the latest backup")


def backed_up_months(store: ObjectStore) -> list[str]:
    """Partition keys that have a backup object, oldest first."""
    folder = store.root / RAW_BACKUP_PREFIX
    if not folder.exists():
        return []
    months = [m.group(1) + "-01" for p in folder.iterdir() if (m := MONTH_FOLDER.search(p.name))]
    return sorted(m for m in months if store.path_for(RAW_BACKUP_PATH, m).exists())


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
    for key in months:
        path = object_store.path_for(RAW_BACKUP_PATH, key)
        frame = rows_from_backup(path.read_bytes(), key)
        database.replace_rows(
            "movies_raw", RAW_COLUMNS, frame, "release_month", month_window(dt.date.fromisoformat(key))
        )
        context.log_event(
            dg.AssetMaterialization(
                asset_key="movies_raw",
                partition=key,
                metadata={"restored_from": str(path), "rows": len(frame)},
            )
        )
        context.log.info(f"restored {len(frame)} movies of {key[:7]} from {path}")


@dg.job(description="Rebuild movies_raw from the object-store backup (all backed-up months unless configured).")
def restore_movies_raw_from_backup():
    restore_movies_raw()
