"""Ingestion: crawl TMDB per release month into PostgreSQL, and back the raw data up to the object store."""

import collections
import gzip
import time

import dagster as dg
import pandas as pd

from movie_assets.domain import clock
from movie_assets.domain.movie_records import RAW_COLUMNS, REJECT_COLUMNS, payload_json, to_frame, validate_month
from movie_assets.domain.progress import Progress
from movie_assets.object_layout import RAW_BACKUP_PATH
from movie_assets.partitions import monthly_asset, months_in, partition_window
from movie_assets.resources.postgres import TableRows, WithSideTables, table_schema
from movie_assets.resources.tmdb import CrawlStats, TmdbAuthError, TmdbSource

RAW_DESCRIPTIONS = {
    "movie_id": "TMDB movie id",
    "release_month": "first day of the release month: the partition key",
    "payload": "the merged TMDB document (details over discover list item), as received",
    "fetched_at": "when this crawl fetched the movie",
}


@monthly_asset(
    pool="tmdb_api",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=20, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    io_manager_key="postgres_io_manager",
    group_name="ingestion",
    kinds={"postgres", "python"},
    metadata={
        "dagster/column_schema": table_schema(RAW_COLUMNS, RAW_DESCRIPTIONS),
        "partition_expr": "release_month",
    },
)
def movies_raw(context: dg.AssetExecutionContext, tmdb: TmdbSource):
    """Movies released in the partition's month(s), crawled from TMDB: typed columns plus the raw payload.

    Records still invalid after merging list item and details go to `movies_rejected`
    with their reason, so nothing is dropped silently.
    """
    window = partition_window(context)
    started = time.monotonic()
    fetched_at = clock.now()
    rows, rejects, totals = [], [], CrawlStats()
    months = months_in(window)
    progress = Progress("release months crawled", len(months), context.log.info, every_s=0)
    for month in months:
        try:
            crawl = tmdb.crawl(month, log=context.log.info)
        except TmdbAuthError as exc:
            # Retrying a 401 only repeats it: fail once, with the variable to set.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        validated = validate_month(crawl.pairs, month, fetched_at)
        rows += validated.rows
        rejects += validated.rejects
        totals.add(**crawl.stats.as_dict())
        context.log.info(f"{month[0]:%Y-%m}: {len(validated.rows)} movies, {len(validated.rejects)} rejected")
        progress.advance()

    frame = to_frame(rows, RAW_COLUMNS)
    rejected = to_frame(rejects, REJECT_COLUMNS)
    reasons = collections.Counter(r["reason"].split(":")[0] for r in rejects)
    yield dg.Output(
        # The month's rejects are replaced in the same transaction as its rows: a failed write keeps both.
        WithSideTables(frame, [TableRows("movies_rejected", REJECT_COLUMNS, rejected)]),
        metadata={
            "source": tmdb.description,
            "months": len(months_in(window)),
            "rows": len(frame),
            "rejected": len(rejected),
            "reject_reasons": dg.MetadataValue.md(_counts_table(reasons, "reason")) if reasons else "none",
            **{name: value for name, value in totals.as_dict().items()},
            "duration_s": round(time.monotonic() - started, 2),
            "preview": dg.MetadataValue.md(
                frame.drop(columns=["payload", "overview"]).head(10).to_markdown(index=False)
            ),
        },
    )


@monthly_asset(
    io_manager_key="object_store_io_manager",
    group_name="ingestion",
    kinds={"s3", "python"},
    metadata={"object_path": RAW_BACKUP_PATH},
)
def movies_raw_backup(context: dg.AssetExecutionContext, movies_raw: pd.DataFrame) -> dict[str, bytes]:
    """The raw partition as gzip JSON Lines in the object store: what `restore_movies_raw_from_backup` reads."""
    months = (
        pd.to_datetime(movies_raw["release_month"]).dt.strftime("%Y-%m-01") if len(movies_raw) else pd.Series(dtype=str)
    )
    objects = {}
    for key in context.partition_keys:
        part = movies_raw[months == key]
        objects[key] = backup_bytes(part)
    context.log.info(f"backing up {len(movies_raw)} movies in {len(objects)} monthly objects")
    return objects


def backup_bytes(frame: pd.DataFrame) -> bytes:
    """One line per movie, in movie_id order (the same bytes for the same movies): id, fetch time
    and the payload, enough to rebuild the typed row."""
    frame = frame.sort_values("movie_id", kind="stable")
    lines = [
        f'{{"movie_id":{movie_id:d},"fetched_at":"{pd.Timestamp(fetched).isoformat()}",'
        f'"payload":{payload if isinstance(payload, str) else payload_json(payload)}}}'
        for movie_id, fetched, payload in zip(frame["movie_id"], frame["fetched_at"], frame["payload"], strict=True)
    ]
    body = ("\n".join(lines) + "\n").encode() if lines else b""
    return gzip.compress(body, mtime=0)


def _counts_table(counts: collections.Counter, label: str) -> str:
    return pd.DataFrame(counts.most_common(), columns=[label, "count"]).to_markdown(index=False)
