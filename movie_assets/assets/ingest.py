"""Ingestion: crawl TMDB per release month into PostgreSQL, and back the raw data up to the object store."""

import collections
import datetime as dt
import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from pydantic import Field

from movie_assets.domain import clock
from movie_assets.domain.movie_records import RAW_COLUMNS, REJECT_COLUMNS, payload_json, to_frame, validate_month
from movie_assets.domain.progress import Progress
from movie_assets.object_layout import RAW_BACKUP_PATH
from movie_assets.partitions import consecutive, month_window, monthly_asset, months_in, partition_window
from movie_assets.resources import crawl_ledger
from movie_assets.resources.object_store import ObjectStore, write_atomically
from movie_assets.resources.postgres import PostgresDatabase, TableRows, table_metadata, table_schema
from movie_assets.resources.tmdb import PAGE_SIZE, CrawlStats, TmdbError, TmdbSettingsError, TmdbSource

BACKUP_COLUMNS = {name: RAW_COLUMNS[name] for name in ("movie_id", "fetched_at", "payload")}
RAW_DESCRIPTIONS = {
    "movie_id": "TMDB movie id",
    "release_month": "first day of the release month: the partition key",
    "payload": "the merged TMDB document (details over discover list item), as received",
    "fetched_at": "when this crawl fetched the movie",
}


# A crawl may not shrink a stored month below this share on its own: a listing that came back empty
# or cut short (TMDB answering `results: null`) must not delete real movies. Deletions arrive by the sync.
MIN_KEPT_SHARE = 0.5


class CrawlConfig(dg.Config):
    """How a crawl treats months an interrupted crawl of the same range already stored."""

    resume: bool = Field(
        default=True,
        description="skip the months an unfinished crawl of the same range (killed, failed, or this step's "
        "earlier attempt) stored since it started; false crawls every month again",
    )
    resume_within_days: int = Field(default=7, gt=0, description="resume only crawls started this recently")
    allow_shrink: bool = Field(
        default=False,
        description=f"store a month even when its crawl keeps under {MIN_KEPT_SHARE:.0%} of the movies stored "
        "for it (else the month fails, and nothing of it is written)",
    )


@monthly_asset(
    pool="tmdb_api",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=20, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    io_manager_key="postgres_io_manager",  # it writes each month itself; downstream steps load through it
    group_name="ingestion",
    kinds={"postgres", "python"},
    metadata={
        "dagster/column_schema": table_schema(RAW_COLUMNS, RAW_DESCRIPTIONS),
        "partition_expr": "release_month",
    },
)
def movies_raw(
    context: dg.AssetExecutionContext, config: CrawlConfig, tmdb: TmdbSource, database: PostgresDatabase
) -> Iterator[dg.AssetMaterialization | dg.MaterializeResult]:
    """Movies released in the partition's month(s), crawled from TMDB: typed columns plus the raw payload.

    Each month is stored as soon as it is crawled, with its rejects (records still invalid after
    merging list item and details, in `movies_rejected` with their reason) in the same transaction:
    a kill or a failure keeps every finished month, and running the same range again resumes
    (`crawl_ledger.py`). Memory holds one month at a time. A range run reports each month as a
    materialization when it is stored (the UI fills in while it runs), with progress and ETA
    counted in requests, not months: old months hold a few movies, new ones thousands.
    """
    window = partition_window(context)
    started = time.monotonic()
    fetched_at = clock.now()
    run_id = context.run.run_id
    months = months_in(window)
    attempt = crawl_ledger.start(
        database, run_id, window, fetched_at, config.resume, dt.timedelta(days=config.resume_within_days)
    )
    if attempt.resumed_run is not None:
        context.log.info(
            f"resuming the unfinished crawl of this range by run {attempt.resumed_run} (started "
            f"{attempt.since:%Y-%m-%d %H:%M} UTC): {len(attempt.done)} of {len(months)} months stored since then "
            "are skipped (config resume: false crawls them again)"
        )
    pending = [month for month in months if month[0] not in attempt.done]
    # A single month needs no estimate: its details progress already counts requests.
    progress = _request_progress(context, tmdb, pending) if len(pending) > 1 else None
    totals, reasons = CrawlStats(), collections.Counter[str]()
    crawled, movies, rejected_count, preview = 0, 0, 0, None
    for month in pending:
        done = _crawl_and_store(
            context, tmdb, database, month, fetched_at, with_preview=preview is None, allow_shrink=config.allow_shrink
        )
        totals.add(**done.stats.as_dict())
        reasons.update(done.reasons)
        crawled, movies, rejected_count = crawled + 1, movies + done.rows, rejected_count + done.rejected
        preview = preview or done.preview
        if progress is not None:
            progress.advance(done.stats.requests)
            yield _month_stored(context, month, done.rows, done.rejected, done.stats.requests, progress)
    crawl_ledger.finish(database, run_id, window, clock.now())
    stored = database.count_rows_in("movies_raw", "release_month", window)
    yield dg.MaterializeResult(
        metadata={
            **table_metadata(database, "movies_raw", RAW_COLUMNS, stored),
            "source": tmdb.description,
            "months": len(months),
            "months_crawled": crawled,
            "months_resumed": len(months) - crawled,
            "resumed_from_run": attempt.resumed_run or "none",
            "rows": stored,
            "crawled_movies": movies,
            "rejected": rejected_count,
            "reject_reasons": dg.MetadataValue.md(_counts_table(reasons, "reason")) if reasons else "none",
            **{name: value for name, value in totals.as_dict().items()},
            **({"requests_estimated": progress.total} if progress is not None and progress.total else {}),
            "duration_s": round(time.monotonic() - started, 2),
            "preview": dg.MetadataValue.md(preview or "no movies crawled in this run"),
        },
    )


@dataclass(frozen=True)
class MonthStored:
    """What a range crawl keeps of a stored month: counts and a preview, not its documents."""

    rows: int
    rejected: int
    stats: CrawlStats
    reasons: collections.Counter[str]
    preview: str | None


def _crawl_and_store(
    context: dg.AssetExecutionContext,
    tmdb: TmdbSource,
    database: PostgresDatabase,
    month: tuple[dt.date, dt.date],
    fetched_at: dt.datetime,
    with_preview: bool,
    allow_shrink: bool,
) -> MonthStored:
    """Crawl one month and store it whole: rows, rejects and ledger row in one transaction.

    A function of its own so the month's documents and frames are freed when it returns: a range
    run holds one month at a time, never the last month while crawling the next.
    """
    try:
        crawl = tmdb.crawl(month, log=context.log.info)
    except TmdbSettingsError as exc:
        # Retrying a 401 or a refused connection only repeats it: fail once, with the variable to set.
        raise exc.step_failure() from exc
    validated = validate_month(crawl.pairs, month, fetched_at)
    frame, rejected = to_frame(validated.rows, RAW_COLUMNS), to_frame(validated.rejects, REJECT_COLUMNS)
    if not allow_shrink:
        refuse_shrink(database, month, len(frame), len(rejected), crawl.stats.listed)
    ledger = crawl_ledger.month_row(
        month[0], context.run.run_id, clock.now(), len(frame), len(rejected), crawl.stats.requests
    )
    # A kill keeps a month whole or not at all.
    database.replace_tables(
        [TableRows("movies_raw", RAW_COLUMNS, frame), TableRows("movies_rejected", REJECT_COLUMNS, rejected), ledger],
        "release_month",
        month,
    )
    context.log.info(f"{month[0]:%Y-%m}: {len(frame)} movies, {len(rejected)} rejected, stored")
    return MonthStored(
        rows=len(frame),
        rejected=len(rejected),
        stats=crawl.stats,
        reasons=collections.Counter(r["reason"].split(":")[0] for r in validated.rejects),
        preview=frame.drop(columns=["payload", "overview"]).head(10).to_markdown(index=False)
        if with_preview and len(frame)
        else None,
    )


def refuse_shrink(
    database: PostgresDatabase, month: tuple[dt.date, dt.date], kept: int, rejected: int, listed: int
) -> None:
    """Fail, before anything is written, when the month's new rows are under MIN_KEPT_SHARE of those stored."""
    stored = database.count_rows_in("movies_raw", "release_month", month)
    if stored and kept < MIN_KEPT_SHARE * stored:
        raise dg.Failure(
            description=(
                f"{month[0]:%Y-%m}: this crawl keeps {kept} movies ({listed} listed, {rejected} rejected) where "
                f"movies_raw stores {stored}; a crawl may not shrink a stored month under {MIN_KEPT_SHARE:.0%} on "
                "its own (an empty or cut-short listing would delete real movies), so nothing of the month was "
                "written. Re-run it later; if TMDB really removed them, run it with config `allow_shrink: true` "
                "(ops: movies_raw: config). Single deletions arrive through the change sync."
            ),
            metadata={"month": month[0].isoformat(), "stored": stored, "kept": kept, "listed": listed},
            allow_retries=False,  # the client already retried every request; the listing itself is short
        )


def _request_progress(
    context: dg.AssetExecutionContext, tmdb: TmdbSource, pending: list[tuple[dt.date, dt.date]]
) -> Progress:
    """Progress of a crawl of several months in requests, estimated from TMDB's own counts.

    One discover request per stretch of consecutive months gives the movies listed in it (`total_results`);
    each costs a details request, and each month's listing one page per 20 movies. Without the count (TMDB
    failing for it), the crawl goes on and progress shows requests done against no estimate.
    """
    try:
        listed = sum(tmdb.count_listed((stretch[0][0], stretch[-1][1])) for stretch in consecutive(pending))
    except TmdbSettingsError as exc:
        raise exc.step_failure() from exc
    except TmdbError as exc:
        context.log.warning(f"no request estimate for the range ({exc}); crawling without an ETA")
        return Progress("TMDB requests of the range (no estimate)", 0, context.log.info)
    estimate = listed + listed // PAGE_SIZE + len(pending)  # each month's pages: at most one more than n/20
    context.log.info(
        f"TMDB lists {listed:,} movies in the {len(pending)} months to crawl: about {estimate:,} requests "
        "(one per movie, one per page of 20); progress and ETA below count requests"
    )
    return Progress("TMDB requests of the range", estimate, context.log.info)


def _month_stored(
    context: dg.AssetExecutionContext,
    month: tuple[dt.date, dt.date],
    rows: int,
    rejected: int,
    requests: int,
    progress: Progress,
) -> dg.AssetMaterialization:
    """The month as stored, while the range still runs: its rows, what it cost, and where the range stands."""
    return dg.AssetMaterialization(
        asset_key=context.asset_key,
        partition=month[0].isoformat(),
        description="stored by a range crawl that is still running",
        metadata={
            "dagster/partition_row_count": rows,
            "rejected": rejected,
            "requests": requests,
            "range_requests_done": progress.done,
            **(
                {"range_requests_estimated": progress.total, "range_eta_s": round(progress.eta_s())}
                if progress.total
                else {}
            ),
        },
    )


@monthly_asset(
    deps=[movies_raw],
    io_manager_key="object_store_io_manager",
    group_name="ingestion",
    kinds={"s3", "python"},
    metadata={"object_path": RAW_BACKUP_PATH},
)
def movies_raw_backup(
    context: dg.AssetExecutionContext, database: PostgresDatabase, object_store: ObjectStore
) -> dg.MaterializeResult:
    """The raw partition as gzip JSON Lines in the object store: what `restore_movies_raw_from_backup` reads.

    Month by month (read, compress, write), so a backfill of any length holds one month in memory.
    A backup never replaces one of more movies without keeping it: the old object stays beside the new
    one as `movies.replaced-<UTC time>.jsonl.gz` (the sync's deletions shrink a month; so might a mistake).
    """
    written, total, movies, kept = [], 0, 0, []
    for key in context.partition_keys:
        month = dt.date.fromisoformat(key)
        part = database.read_rows("movies_raw", BACKUP_COLUMNS, "release_month", month_window(month))
        data = backup_bytes(part)
        kept += keep_a_larger_backup(object_store, key, len(part))
        written.append(str(object_store.write(RAW_BACKUP_PATH, key, data)))
        total, movies = total + len(data), movies + len(part)
    context.log.info(f"backed up {movies} movies in {len(written)} monthly objects")
    if kept:
        context.log.warning(f"kept {len(kept)} earlier backups that held more movies: {', '.join(kept[:5])}")
    path = written[0] if len(written) == 1 else str(object_store.path_for(RAW_BACKUP_PATH, None).parent.parent)
    return dg.MaterializeResult(
        metadata={
            "objects": len(written),
            "bytes": total,
            "movies": movies,
            "larger_backups_kept": len(kept),
            "path": dg.MetadataValue.path(path),
        }
    )


def keep_a_larger_backup(object_store: ObjectStore, key: str, movies: int) -> list[str]:
    """Copy the month's current backup aside when it holds more movies than the one about to replace it."""
    current = object_store.path_for(RAW_BACKUP_PATH, key)
    if not current.exists():
        return []
    previous = current.read_bytes()
    if gzip.decompress(previous).count(b"\n") <= movies:
        return []
    aside = current.with_name(f"movies.replaced-{clock.now():%Y%m%dT%H%M%S}.jsonl.gz")
    write_atomically(aside, previous)
    return [str(aside)]


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
