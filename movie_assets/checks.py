"""Asset checks that read what is stored: the PostgreSQL tables of the partition, after the write.

Checks over the frame an asset was about to write restated the validation that built the
frame, so they could not fail. These query the tables themselves and name the bad movie ids
in their metadata. Each evaluation is of one release month: a run over a range of months logs
one per month, so each month's status on the *Checks* tab (and the automation's hold) is its
own. The blocking ones stop a bad month from flowing on: the run fails at the check, and the
assets below it in that run do not execute. Dagster 1.13's UI cannot run a partitioned check
alone for a chosen month, so the job `monthly_checks` (`jobs/monthly_checks.py`) does; *Execute
all* on the *Checks* tab checks every materialized month.
"""

import datetime as dt
import os
import string
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from psycopg import sql

from movie_assets.dagster_private import AssetCheckEvaluationTargetMaterializationData
from movie_assets.domain import clock
from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.object_layout import FEATURES_PREFIX
from movie_assets.partitions import (
    add_months,
    month_window,
    months_in,
    partition_window,
    release_month_partitions,
)
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.online_writer import OnlineReader
from movie_assets.resources.postgres import PostgresDatabase, existing_tables

EXAMPLES = 10  # bad ids named in a check's metadata
# Share of missing values above which a key column deserves a look (warn, not fail):
# TMDB leaves budget and revenue unknown for most small films.
MISSING_RATIO_LIMITS = {"runtime": 0.2, "vote_average": 0.3, "original_language": 0.01, "budget": 0.75, "revenue": 0.85}
Window = tuple[dt.date, dt.date]
# Partitioned checks are a Dagster preview (1.13): each month gets its own check status in the UI.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


class TablesMissing(Exception):
    """A check's table does not exist (yet): the check fails saying so, it never passes by absence."""

    def __init__(self, schema: str, tables: list[str]):
        super().__init__(
            f"{', '.join(f'{schema}.{t}' for t in tables)} does not exist: materialize the asset that writes it "
            "(or check MOVIE_DB_SCHEMA), then run this check again"
        )
        self.tables = tables


def stored(database: PostgresDatabase, query: str, params: tuple = ()) -> list[tuple]:
    """`query` with each `{table}` bound to that table of the schema; `TablesMissing` while one does not exist."""
    tables = sorted({name for _, name, _, _ in string.Formatter().parse(query) if name})
    with database.connect("running an asset check") as conn:
        missing = sorted(set(tables) - set(existing_tables(conn, database.db_schema, tables)))
        if missing:
            raise TablesMissing(database.db_schema, missing)
        bound = sql.SQL(query).format(**{table: database.ident(table) for table in tables})
        return conn.execute(bound, params).fetchall()


def bad_ids_result(bad: list[tuple], what: str, window: Window, **extra) -> dg.AssetCheckResult:
    """Passed when no row is bad; else how many and the first ids (the first column of `bad`)."""
    ids = sorted({row[0] for row in bad if row[0] is not None})
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            what: len(bad),
            "bad_movie_ids": str(ids[:EXAMPLES]),
            "window": f"{window[0]}..{window[1]}",
            **extra,
        },
    )


# ---- the checks, over plain arguments (tested on corrupted tables) ---------------------
def duplicate_ids(database: PostgresDatabase, table: str, window: Window) -> dg.AssetCheckResult:
    """Ids of the window stored more than once, in any month: a movie lives in one month."""
    bad = stored(
        database,
        f"select movie_id, count(*) from {{{table}}} where movie_id in "
        f"(select movie_id from {{{table}}} where release_month >= %s and release_month < %s) "
        "group by movie_id having count(*) > 1",
        window,
    )
    return bad_ids_result(bad, "duplicate_ids", window)


def rows_outside_their_month(database: PostgresDatabase, table: str, window: Window) -> dg.AssetCheckResult:
    """Rows whose release_month is not the month of their release_date (or that have no date)."""
    bad = stored(
        database,
        f"select movie_id from {{{table}}} where release_month >= %s and release_month < %s "
        "and (release_date is null or release_month <> date_trunc('month', release_date)::date)",
        window,
    )
    return bad_ids_result(bad, "rows_outside", window)


def ids_and_titles_present(database: PostgresDatabase, window: Window) -> dg.AssetCheckResult:
    bad = stored(
        database,
        "select movie_id from {movies_raw} where release_month >= %s and release_month < %s "
        "and (movie_id is null or title is null or btrim(title) = '')",
        window,
    )
    return bad_ids_result(bad, "rows_without_id_or_title", window)


def months_with_rows(database: PostgresDatabase, window: Window, today: dt.date) -> dg.AssetCheckResult:
    """Every month of the window that has begun has movies (an empty future month is normal)."""
    counts = dict(
        stored(
            database,
            "select release_month, count(*) from {movies_raw} "
            "where release_month >= %s and release_month < %s group by release_month",
            window,
        )
    )
    empty, month = [], window[0]
    while month < window[1]:
        if month <= today and not counts.get(month):
            empty.append(month.isoformat())
        month = add_months(month, 1)
    return dg.AssetCheckResult(
        passed=not empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"empty_past_months": len(empty), "examples": str(empty[:EXAMPLES])},
    )


def missing_ratios(database: PostgresDatabase, window: Window) -> dg.AssetCheckResult:
    """The NULL share of each key column of movies_clean against its limit (warn)."""
    averages = ", ".join(f'avg(("{c}" is null)::int)' for c in MISSING_RATIO_LIMITS)
    found = stored(
        database,
        f"select count(*), {averages} from {{movies_clean}} where release_month >= %s and release_month < %s",
        window,
    )
    ratios = dict(zip(MISSING_RATIO_LIMITS, (float(v or 0) for v in found[0][1:]), strict=True)) if found else {}
    over = sorted(c for c, ratio in ratios.items() if ratio > MISSING_RATIO_LIMITS[c])
    table = "\n".join(
        ["| column | missing | limit |", "|---|---|---|"]
        + [f"| {c} | {ratios.get(c, 0):.2f} | {limit:.2f} |" for c, limit in MISSING_RATIO_LIMITS.items()]
    )
    return dg.AssetCheckResult(
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rows": found[0][0] if found else 0, "ratios": dg.MetadataValue.md(table), "over_limit": str(over)},
    )


def raw_reconciles_with_clean(database: PostgresDatabase, window: Window) -> dg.AssetCheckResult:
    """Each raw movie of the window is either clean or dropped with a reason, and nothing else is."""
    bad = stored(
        database,
        "select coalesce(r.movie_id, c.movie_id, d.movie_id), "
        "case when r.movie_id is null then 'not in movies_raw' "
        "when c.movie_id is null and d.movie_id is null then 'neither clean nor dropped' "
        "else 'both clean and dropped' end "
        "from (select movie_id from {movies_raw} where release_month >= %s and release_month < %s) r "
        "full join (select movie_id from {movies_clean} where release_month >= %s and release_month < %s) c "
        "using (movie_id) "
        "full join (select movie_id from {movies_clean_dropped} where release_month >= %s and release_month < %s) d "
        "using (movie_id) "
        "where r.movie_id is null or (c.movie_id is null) = (d.movie_id is null)",
        window * 3,
    )
    reasons = sorted({reason for _, reason in bad})
    return bad_ids_result(bad, "unreconciled_rows", window, reasons=", ".join(reasons) or "none")


def features_match_clean(database: PostgresDatabase, window: Window) -> dg.AssetCheckResult:
    """Every clean movie of the window has one feature row, and no feature row lacks a clean movie."""
    bad = stored(
        database,
        "select coalesce(c.movie_id, f.movie_id), "
        "case when f.movie_id is null then 'no feature row' when c.movie_id is null then 'not in movies_clean' "
        "else 'feature rows: ' || f.n end "
        "from (select movie_id from {movies_clean} where release_month >= %s and release_month < %s) c "
        "full join (select movie_id, count(*) as n from {features} "
        "where release_month >= %s and release_month < %s group by movie_id) f using (movie_id) "
        "where c.movie_id is null or f.movie_id is null or f.n <> 1",
        window * 2,
    )
    reasons = sorted({reason.split(":")[0] for _, reason in bad})
    return bad_ids_result(bad, "mismatched_ids", window, reasons=", ".join(reasons) or "none")


SOURCE_MAX_AGE_ENV = "MOVIE_SOURCE_MAX_AGE_DAYS"
DEFAULT_SOURCE_MAX_AGE_DAYS = 7
SYNC_CURSOR = ("tmdb_sync_cursor", "movie_changes")  # jobs/sync_tmdb_changes.py: CURSOR_TABLE, CURSOR_NAME


def synced_through(database: PostgresDatabase) -> dt.datetime | None:
    """The start (UTC) of the last day the change sync read: every unchanged movie was confirmed current then.

    A movie absent from TMDB's change list up to that day had no edit since its fetch. The
    start of the day, not its end: the day's list may have been read before the day was over.
    """
    table, name = SYNC_CURSOR
    with database.connect("reading the TMDB sync cursor") as conn:
        if not existing_tables(conn, database.db_schema, [table]):
            return None
        query = sql.SQL("select synced_through from {} where name = %s").format(database.ident(table))
        row = conn.execute(query, (name,)).fetchone()
    return dt.datetime.combine(row[0], dt.time(), dt.timezone.utc) if row and row[0] else None


def source_verified_recently(
    database: PostgresDatabase, window: Window, now: dt.datetime, max_age: dt.timedelta
) -> dg.AssetCheckResult:
    """Movies whose TMDB source was last verified more than `max_age` ago, named (warn).

    Verified is the later of the movie's own fetch (`fetched_at`) and the change sync's cursor.
    Nothing expires on its own any more: a stale source shows up here instead of dropping out.
    """
    cutoff = now - max_age
    synced = synced_through(database)
    if synced is not None and synced >= cutoff:
        stale = []
    else:
        stale = stored(
            database,
            "select movie_id, release_month from {movies_raw} where release_month >= %s and release_month < %s "
            "and fetched_at < %s order by movie_id",
            (*window, cutoff),
        )
    per_month: dict[str, int] = {}
    for _, month in stale:
        per_month[month.isoformat()[:7]] = per_month.get(month.isoformat()[:7], 0) + 1
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "stale_movies": len(stale),
            "stale_per_month": str(dict(sorted(per_month.items()))),
            "stale_movie_ids": str([movie_id for movie_id, _ in stale[:EXAMPLES]]),
            "verified_before": cutoff.isoformat(),
            "max_age_days": max_age.days,
            "sync_cursor": synced.isoformat() if synced else "none",
            "window": f"{window[0]}..{window[1]}",
        },
    )


# ---- the online store (Redis) against the newest offline rows, both ways -----------------
def read_offline(object_store: ObjectStore, columns: list[str] | None = None, movie_ids=None) -> pd.DataFrame:
    """movie_features rows of the offline store (all release months): some columns, or some movies.

    The checks need every movie's key but the values of a sample only: reading three columns
    instead of 43 keeps a million-movie store in a few hundred MB.
    """
    folder = object_store.root / FEATURES_PREFIX
    empty = pd.DataFrame(columns=columns or ["movie_id", "event_timestamp", "created", *FEATURE_NAMES])
    if not folder.exists():
        return empty
    filters = [("movie_id", "in", [int(i) for i in movie_ids])] if movie_ids is not None else None
    frames = [
        pd.read_parquet(part.open("rb"), columns=columns, filters=filters)
        for part in sorted(folder.glob("release_month=*/part.parquet"))
    ]
    return pd.concat(frames, ignore_index=True) if frames else empty


def latest_offline(offline: pd.DataFrame) -> pd.DataFrame:
    """The newest row per movie: what the online store must hold."""
    return (
        offline.sort_values(["movie_id", "event_timestamp", "created"])
        .drop_duplicates("movie_id", keep="last")
        .reset_index(drop=True)
    )


def online_coverage(reader: OnlineReader, latest: pd.DataFrame) -> dict:
    """Offline -> online: movies of the newest offline rows without a key, however old their row.
    Online -> offline: keys of movies the newest offline rows no longer have (stale keys).

    Nothing expires (no view TTL, no key TTL), so every offline movie must be online.
    """
    ids = latest["movie_id"].to_numpy(dtype="int64") if len(latest) else np.array([], dtype="int64")
    missing = ids[~reader.present(ids)] if len(ids) else ids
    stale = sorted(set(reader.stored_ids()) - set(ids.tolist()))
    return {
        "movies": len(ids),
        "missing": len(missing),
        "missing_movie_ids": str(sorted(missing.tolist())[:EXAMPLES]),
        "stale_online_keys": len(stale),
        "stale_movie_ids": str(stale[:EXAMPLES]),
    }


def online_keys_match_offline(feast: FeastStore, object_store: ObjectStore) -> dg.AssetCheckResult:
    store = feast.store()
    reader = OnlineReader(store, store.get_feature_view("movie_features"))
    latest = latest_offline(read_offline(object_store, columns=["movie_id", "event_timestamp", "created"]))
    coverage = online_coverage(reader, latest)
    return dg.AssetCheckResult(
        passed=coverage["missing"] == 0 and coverage["stale_online_keys"] == 0,
        metadata={"project": feast.project, **coverage},
    )


@dg.asset_check(
    asset="online_features",
    name="online_keys_match_offline",
    description="every movie of the newest offline rows has an online key, and no online "
    "key belongs to a movie the offline store no longer has; names the ids",
)
def online_keys_match_offline_check(feast: FeastStore, object_store: ObjectStore) -> dg.AssetCheckResult:
    """From the Checks tab at any time (a sync may drop movies between materializations)."""
    return online_keys_match_offline(feast, object_store)


# ---- as Dagster checks, one per release-month window ----------------------------------
@dataclass(frozen=True)
class MonthlyCheck:
    """One storage check of a monthly asset: a Dagster check step for runs, and callable by the op jobs
    (sync, restore) that write a month without a check step of their own."""

    asset: str
    name: str
    description: str
    evaluate: Callable[[PostgresDatabase, Window], dg.AssetCheckResult]
    blocking: bool = False


@dataclass(frozen=True)
class FailedCheck:
    """A blocking check that failed on a month: the month is held until it passes."""

    name: str
    bad_ids: str


def evaluate_check(evaluate, database: PostgresDatabase, window: Window) -> dg.AssetCheckResult:
    """`evaluate` over the stored table; a missing table fails the check, saying which."""
    try:
        return evaluate(database, window)
    except TablesMissing as missing:
        return dg.AssetCheckResult(
            passed=False, description=str(missing), metadata={"missing_tables": ", ".join(missing.tables)}
        )


def newest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The partition's newest materialization, as the target of a check evaluation (None before the first)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    (record,) = records
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


def evaluate_month(
    instance: dg.DagsterInstance, database: PostgresDatabase, check: MonthlyCheck, month: dt.date
) -> dg.AssetCheckEvaluation:
    """`check` over the stored rows of `month`: an evaluation of that partition, targeting its newest value.

    The partition and the target are what the *Checks* tab and the automation hold
    (`automation/staleness.py`) read as the check of the month's current value.
    """
    key, partition = dg.AssetKey(check.asset), month.isoformat()
    result = evaluate_check(check.evaluate, database, month_window(month))
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=check.name,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        blocking=check.blocking,
        description=result.description or check.description,
        partition=partition,
        target_materialization_data=newest_materialization(instance, key, partition),
    )


def failed_blocking(evaluation: dg.AssetCheckEvaluation) -> FailedCheck | None:
    """The failure that holds the month, when `evaluation` is of a blocking check that failed."""
    if not evaluation.blocking or evaluation.passed:
        return None
    examples = evaluation.metadata.get("bad_movie_ids") or evaluation.metadata.get("missing_tables") or ""
    return FailedCheck(evaluation.check_name, str(getattr(examples, "value", examples)))


def months_to_check(context: dg.AssetCheckExecutionContext | dg.OpExecutionContext, asset: str) -> list[dt.date]:
    """The run's months: its partition, each month of its range, or (a run without one, e.g. the
    *Checks* tab's *Execute all*) every month of `asset` materialized so far."""
    if context.has_partition_key or context.has_partition_key_range:
        return [start for start, _ in months_in(partition_window(context))]
    materialized = sorted(context.instance.get_materialized_partitions(dg.AssetKey(asset)))
    if not materialized:
        raise dg.Failure(
            description=(
                f"no month of {asset} is materialized yet, so its monthly checks have nothing to check: "
                f"materialize {asset} for a month first (its checks run with it)"
            ),
            allow_retries=False,
        )
    return [dt.date.fromisoformat(month) for month in materialized]


def monthly_check(spec: MonthlyCheck):
    """A Dagster check of `spec.asset`, partitioned by release month: one evaluation per month of its run."""

    @dg.asset_check(
        asset=spec.asset,
        name=spec.name,
        description=spec.description,
        blocking=spec.blocking,
        partitions_def=release_month_partitions,
    )
    def check(context: dg.AssetCheckExecutionContext, database: PostgresDatabase):
        # An AssetCheckResult is logged without a partition in a range run, whose check Dagster planned
        # per month: the months then show "Skipped" beside a "Passed" without a month. Dagster fails the
        # step after the evaluations when a blocking one failed.
        for month in months_to_check(context, spec.asset):
            yield evaluate_month(context.instance, database, spec, month)
        (output,) = context.op_execution_context.selected_output_names
        yield dg.Output(None, output_name=output)

    return check


def today() -> dt.date:
    return clock.today()


def days_setting(name: str, default: int) -> int:
    """A whole number of days from the environment variable `name` (unset or empty: `default`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number of days, not {raw!r}")
    return int(raw)


HISTORY_DAYS_ENV = "MOVIE_FEATURE_HISTORY_DAYS"
DEFAULT_HISTORY_DAYS = 400


def history_window() -> dt.timedelta:
    """How long a superseded feature row stays after its successor became valid (MOVIE_FEATURE_HISTORY_DAYS).

    A point-in-time join for any time inside the window still finds the value of its time.
    """
    return dt.timedelta(days=days_setting(HISTORY_DAYS_ENV, DEFAULT_HISTORY_DAYS))


MONTHLY_CHECKS = [
    MonthlyCheck(
        "movies_raw",
        "unique_movie_ids",
        "each movie is stored once, in one month",
        lambda db, window: duplicate_ids(db, "movies_raw", window),
        blocking=True,
    ),
    MonthlyCheck(
        "movies_raw",
        "release_dates_inside_partition",
        "release_date lies in the row's release month",
        lambda db, window: rows_outside_their_month(db, "movies_raw", window),
        blocking=True,
    ),
    MonthlyCheck(
        "movies_raw",
        "ids_and_titles_present",
        "no stored row without an id or a title",
        ids_and_titles_present,
        blocking=True,
    ),
    MonthlyCheck(
        "movies_raw",
        "rows_for_past_months",
        "months that have begun have movies (warn only)",
        lambda db, window: months_with_rows(db, window, today()),
    ),
    MonthlyCheck(
        "movies_raw",
        "source_verified_recently",
        f"every movie's TMDB source was fetched or confirmed by the change sync within {SOURCE_MAX_AGE_ENV} "
        f"(default {DEFAULT_SOURCE_MAX_AGE_DAYS}) days; names the stale ones (warn only)",
        lambda db, window: source_verified_recently(
            db, window, clock.now(), dt.timedelta(days=days_setting(SOURCE_MAX_AGE_ENV, DEFAULT_SOURCE_MAX_AGE_DAYS))
        ),
    ),
    MonthlyCheck(
        "movies_clean",
        "unique_movie_ids",
        "each clean movie is stored once, in one month",
        lambda db, window: duplicate_ids(db, "movies_clean", window),
        blocking=True,
    ),
    MonthlyCheck(
        "movies_clean",
        "release_dates_inside_partition",
        "release_date lies in the row's release month",
        lambda db, window: rows_outside_their_month(db, "movies_clean", window),
        blocking=True,
    ),
    MonthlyCheck(
        "movies_clean",
        "missing_ratio_within_limits",
        "NULL share of key columns under their limits (warn only)",
        missing_ratios,
    ),
    MonthlyCheck(
        "movies_clean",
        "row_count_reconciles",
        "raw = clean + dropped, movie by movie, in each month",
        raw_reconciles_with_clean,
        blocking=True,
    ),
    MonthlyCheck(
        "movie_features",
        "features_match_clean",
        "one feature row per clean movie, none without one",
        features_match_clean,
        blocking=True,
    ),
]
STORAGE_CHECKS = [monthly_check(check) for check in MONTHLY_CHECKS]

# Checks of the online store, runnable from online_features' Checks tab (definitions.py lists them).
ONLINE_STORE_CHECKS = [online_keys_match_offline_check]


# ---- months written by an op job (sync, restore): the same checks, logged by the op ------------
def log_checked_materializations(
    context: dg.OpExecutionContext,
    database: PostgresDatabase,
    asset: str,
    months: Mapping[dt.date, Mapping],
    description: str | None = None,
) -> dict[dt.date, list[FailedCheck]]:
    """Per month (-> its metadata): its materialization, then every storage check of `asset` against it.
    Returns the months whose blocking checks failed.

    An op job has no check steps, so without this a month it wrote would reach automation unchecked.
    Each evaluation targets the materialization just logged (its storage id), so the Checks tab and
    the automation hold (`automation/staleness.py`) see it as the check of the current value.
    """
    checks = [check for check in MONTHLY_CHECKS if check.asset == asset]
    held: dict[dt.date, list[FailedCheck]] = {}
    for month, metadata in sorted(months.items()):
        context.log_event(
            dg.AssetMaterialization(
                asset_key=asset, partition=month.isoformat(), description=description, metadata=metadata
            )
        )
        for check in checks:
            failed = log_month_check(context, database, check, month)
            if failed:
                held.setdefault(month, []).append(failed)
    return held


def log_month_check(
    context: dg.OpExecutionContext, database: PostgresDatabase, check: MonthlyCheck, month: dt.date
) -> FailedCheck | None:
    """Log `check`'s evaluation of `month` from an op (which has no check step); its failure if it holds the month."""
    evaluation = evaluate_month(context.instance, database, check, month)
    context.log_event(evaluation)  # type: ignore[arg-type]  # typed for materializations; Dagster logs checks too
    return failed_blocking(evaluation)


CHECK_JOB = "monthly_checks"  # jobs/monthly_checks.py: the storage checks of the months one chooses


def held_months_failure(
    asset: str, held: Mapping[dt.date, list[FailedCheck]], job: str, did: str = "stored"
) -> dg.Failure:
    """The op's failure once every month is logged: which months are held, by which checks, and the way out."""
    lines = [
        f"{month:%Y-%m}: " + "; ".join(f"{f.name} failed (bad ids {f.bad_ids or 'none named'})" for f in failed)
        for month, failed in sorted(held.items())
    ]
    first = min(held).isoformat()
    return dg.Failure(
        description=(
            f"{job} {did} {asset} months that fail blocking storage checks, so automation holds them "
            f"(nothing below {asset} is built from them) until the checks pass: " + " | ".join(lines) + ". "
            f"Fix the named rows and run the month's checks again (job {CHECK_JOB}, partition {first}; the results "
            f"show on {asset}'s Checks tab), or re-crawl the month, e.g. "
            f"`dg launch -m movie_assets --assets {asset} --partition {first}`."
        ),
        metadata={
            "held_months": ", ".join(month.isoformat() for month in sorted(held)),
            "failed_checks": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines)),
        },
        allow_retries=False,
    )
