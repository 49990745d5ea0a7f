"""`sync_tmdb_changes`: keep `movies_raw` current from TMDB's change list, without a discover crawl.

From a cursor (the last synced UTC day, re-read because the list is per day) to today:
the ids TMDB lists as changed, one details request each, then one transaction that
replaces changed rows, moves movies between months, adds new ones and removes deleted
ones from every table, records them in the removal outbox and advances the cursor. Only after
that commit do removed movies leave the feature Parquet and Redis (`removal_outbox`). A sync
killed before the commit changes nothing and resumes from the same cursor; one killed after it
leaves outbox entries that the next sync applies.
"""

import datetime as dt
import time

import dagster as dg
import pandas as pd
from psycopg import sql
from pydantic import Field

from movie_assets.checks import held_months_failure, log_checked_materializations
from movie_assets.domain import clock
from movie_assets.domain.change_sync import COMPARED_COLUMNS, REMOVED_COLUMNS, ChangePlan, plan_changes
from movie_assets.domain.movie_records import RAW_COLUMNS, REJECT_COLUMNS, to_frame
from movie_assets.partitions import add_months, release_month_partitions
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.postgres import PostgresDatabase, PostgresError, copy_frame, existing_tables
from movie_assets.resources.removal_outbox import OUTBOX_COLUMNS, OUTBOX_TABLE, apply_removals, record_removals
from movie_assets.resources.tmdb import TmdbSettingsError, TmdbSource
from movie_assets.settings import redact_text

CURSOR_TABLE = "tmdb_sync_cursor"
CURSOR_COLUMNS = {
    "name": "text primary key",
    "synced_through": "date",
    "updated_at": "timestamp with time zone",
    "pending_months": "date[]",  # committed months not yet logged as materializations
}
CURSOR_NAME = "movie_changes"
# The ids fetched on the current UTC day. A fetch today postdates every closed day, so an id listed
# for a closed day or again for today is not fetched twice today; the first sync after midnight
# fetches yesterday's ids once more (their later edits of that day). Older days are dropped.
FETCHED_TABLE = "tmdb_sync_fetched"
FETCHED_COLUMNS = {"movie_id": "bigint", "day": "date", "fetched_at": "timestamp with time zone"}  # one row an id
# Tables movies_clean rebuilds from a month's raw rows. A moved movie leaves its old month in them with the
# raw row; otherwise a run of its new month (apart from the old month's, when the months are not adjacent)
# would find it stored twice and its blocking unique_movie_ids check would fail. Features and scores keep
# serving the old values until the new month's run replaces them.
REBUILT_FROM_RAW_MONTH = ["movies_clean", "movie_genres", "movies_clean_dropped"]
# Where a removed movie is deleted besides movies_raw: everything below it that holds movie rows.
DOWNSTREAM_TABLES = [
    "movies_clean",
    "movie_genres",
    "movies_clean_dropped",
    "features",
    "features_history",
    "predictions",
]


class SyncConfig(dg.Config):
    first_day: str = Field(default="", description="override the cursor: first UTC day to read (YYYY-MM-DD)")
    max_days: int = Field(default=90, gt=0, description="read at most this many days after the cursor per run")
    skip_fetched_today: bool = Field(
        default=True,
        description="skip ids an earlier sync fetched today (hourly syncs read today's list again); false re-fetches",
    )


def partition_range() -> tuple[dt.date, dt.date]:
    """[first partition, end of the last one): movies outside it are counted and skipped."""
    keys = release_month_partitions.get_partition_keys()
    return dt.date.fromisoformat(keys[0]), add_months(dt.date.fromisoformat(keys[-1]), 1)


def read_cursor(database: PostgresDatabase, today: dt.date) -> tuple[dt.date, str]:
    """(first day to read, where it came from): the cursor, else the oldest fetch in movies_raw, else today."""
    with database.connect("reading the TMDB sync cursor") as conn:
        tables = existing_tables(conn, database.db_schema, [CURSOR_TABLE, "movies_raw"])
        if CURSOR_TABLE in tables:
            row = conn.execute(
                sql.SQL("select synced_through from {} where name = %s").format(database.ident(CURSOR_TABLE)),
                (CURSOR_NAME,),
            ).fetchone()
            if row:
                return row[0], "cursor"
        if "movies_raw" in tables:
            row = conn.execute(
                sql.SQL("select min(fetched_at) from {}").format(database.ident("movies_raw"))
            ).fetchone()
            if row and row[0]:
                return row[0].astimezone(dt.timezone.utc).date(), "oldest fetched_at in movies_raw"
    return today, "today (nothing stored yet)"


def fetched_today(database: PostgresDatabase, today: dt.date) -> set[int]:
    """The ids an earlier sync fetched (and committed) on this UTC day."""
    with database.connect("reading the ids fetched today") as conn:
        if not existing_tables(conn, database.db_schema, [FETCHED_TABLE]):
            return set()
        query = sql.SQL("select movie_id from {} where day = %s").format(database.ident(FETCHED_TABLE))
        return {row[0] for row in conn.execute(query, (today,))}


def stored_rows(database: PostgresDatabase, ids: list[int]) -> dict[int, dict]:
    """The typed columns of the stored movies among `ids`: what a new document is compared with."""
    with database.connect("reading stored movies") as conn:
        if not existing_tables(conn, database.db_schema, ["movies_raw"]):
            return {}
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in COMPARED_COLUMNS)
        query = sql.SQL("select {} from {} where movie_id = any(%s)").format(columns, database.ident("movies_raw"))
        return {row[0]: dict(zip(COMPARED_COLUMNS, row, strict=True)) for row in conn.execute(query, (ids,))}


@dg.op(
    pool="tmdb_api",
    description="Applies TMDB's change list since the cursor to movies_raw (and removes deleted movies everywhere).",
)
def apply_tmdb_changes(
    context: dg.OpExecutionContext,
    config: SyncConfig,
    tmdb: TmdbSource,
    database: PostgresDatabase,
    object_store: ObjectStore,
    feast: FeastStore,
) -> dg.Output:
    started = time.monotonic()
    now = clock.now()
    today = now.date()
    first_day, origin = (
        (dt.date.fromisoformat(config.first_day), "config") if config.first_day else read_cursor(database, today)
    )
    last_day = min(today, first_day + dt.timedelta(days=config.max_days - 1))
    context.log.info(f"TMDB change sync {first_day}..{last_day} (from the {origin})")
    try:
        changes = tmdb.changed_ids(first_day, last_day, log=context.log.info)
        seen = fetched_today(database, today) if config.skip_fetched_today else set()
        to_fetch = [movie_id for movie_id in changes.ids if movie_id not in seen]
        if seen:
            context.log.info(f"{len(changes.ids) - len(to_fetch)} of the listed ids were fetched earlier today")
        details = tmdb.movie_details(to_fetch, log=context.log.info)
    except TmdbSettingsError as exc:
        raise exc.step_failure() from exc
    relogged = log_pending(context, database)
    plan = plan_changes(stored_rows(database, to_fetch), details.documents, partition_range(), now)
    commit_plan(plan, database, last_day)
    applied = apply_outbox(context, database, object_store, feast)
    log_months(context, database, {month: dict(plan.months[month]) for month in plan.touched_months})
    if isinstance(applied, str):
        raise dg.Failure(description=applied, allow_retries=True)
    totals = plan.totals()
    context.log.info(f"synced {len(to_fetch)} changed movies in {len(plan.touched_months)} months: {totals}")
    return dg.Output(
        None,
        metadata={
            "window": f"{first_day}..{last_day}",
            "cursor_from": origin,
            "changed_ids": len(changes.ids),
            "fetched_earlier_today": len(changes.ids) - len(to_fetch),
            "months_touched": len(plan.touched_months),
            "months_relogged": relogged,
            **totals,
            "requests": changes.stats.requests + details.stats.requests,
            "change_list_pages": changes.stats.pages,
            "change_list_items_skipped": changes.stats.skipped,  # items that name no movie: counted, never fatal
            **applied,
            "duration_s": round(time.monotonic() - started, 2),
        },
    )


def commit_plan(plan: ChangePlan, database: PostgresDatabase, synced_through: dt.date) -> None:
    """One transaction for every table, the removal outbox and the cursor; no other store changes in it.

    Locks: the touched months of `movies_raw`, then the `feature_store` months of removed movies
    (LOCK_ORDER), so movie_features never writes a month's features between this commit's read and
    its write. The materializations are logged after the commit (a child run started by an earlier
    event would read the old rows); the touched months are kept in the cursor row until they are
    logged, so a sync killed in between has the next one log them.
    """
    removed_ids = [r["movie_id"] for r in plan.removed]
    with database.connect("applying TMDB changes") as conn:
        for table, columns in (
            ("movies_raw", RAW_COLUMNS),
            ("movies_rejected", REJECT_COLUMNS),
            ("movies_removed", REMOVED_COLUMNS),
            (CURSOR_TABLE, CURSOR_COLUMNS),
            (FETCHED_TABLE, FETCHED_COLUMNS),
            (OUTBOX_TABLE, OUTBOX_COLUMNS),
        ):
            database.ensure_table(conn, table, columns, "release_month" if "release_month" in columns else None)
        with conn.transaction():
            database.lock_in_order(
                conn,
                {
                    "movies_raw": plan.touched_months,
                    "feature_store": sorted({r["release_month"] for r in plan.removed}),
                },
            )
            raw = database.ident("movies_raw")
            conn.execute(sql.SQL("delete from {} where movie_id = any(%s)").format(raw), (plan.delete_ids,))
            copy_frame(conn, raw, RAW_COLUMNS, to_frame(plan.rows, RAW_COLUMNS))
            if plan.moved_ids:  # their old month's derived rows are stale: a movie lives in one month
                for table in existing_tables(conn, database.db_schema, REBUILT_FROM_RAW_MONTH):
                    conn.execute(
                        sql.SQL("delete from {} where movie_id = any(%s)").format(database.ident(table)),
                        (plan.moved_ids,),
                    )
            if removed_ids:
                for table in existing_tables(conn, database.db_schema, DOWNSTREAM_TABLES):
                    conn.execute(
                        sql.SQL("delete from {} where movie_id = any(%s)").format(database.ident(table)), (removed_ids,)
                    )
                copy_frame(
                    conn, database.ident("movies_removed"), REMOVED_COLUMNS, to_frame(plan.removed, REMOVED_COLUMNS)
                )
                record_removals(conn, database, plan.removed)
            # Earlier rejects of every fetched movie go: valid now, removed, or rejected again just once.
            rejected = database.ident("movies_rejected")
            conn.execute(
                sql.SQL("delete from {} where movie_id = any(%s)").format(rejected),
                (plan.fetched_ids,),
            )
            copy_frame(conn, rejected, REJECT_COLUMNS, to_frame(plan.rejects, REJECT_COLUMNS))
            conn.execute(
                sql.SQL(
                    "insert into {} (name, synced_through, updated_at, pending_months) values (%s, %s, now(), %s) "
                    "on conflict (name) do update set synced_through = excluded.synced_through, updated_at = now(), "
                    "pending_months = excluded.pending_months"
                ).format(database.ident(CURSOR_TABLE)),
                (CURSOR_NAME, synced_through, plan.touched_months),
            )
            fetched = database.ident(FETCHED_TABLE)
            day = (plan.fetched_at or clock.now()).astimezone(dt.timezone.utc).date()
            conn.execute(
                sql.SQL("delete from {} where day < %s or movie_id = any(%s)").format(fetched), (day, plan.fetched_ids)
            )
            copy_frame(
                conn,
                fetched,
                FETCHED_COLUMNS,
                pd.DataFrame(
                    {"movie_id": pd.Series(plan.fetched_ids, dtype="int64"), "day": day, "fetched_at": plan.fetched_at}
                ),
            )


def apply_outbox(
    context: dg.OpExecutionContext, database: PostgresDatabase, object_store: ObjectStore, feast: FeastStore
) -> dict[str, int] | str:
    """The committed removals (this sync's and any an earlier, killed one left) leave Parquet and Redis.

    Returns the counts, or what failed: the months are logged first either way, and the entries
    stay in the outbox for the next sync.
    """
    import redis

    try:
        return apply_removals(database, object_store, feast, log=context.log.info)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, PostgresError, OSError) as exc:
        return (
            f"the sync committed, but its removals could not be applied outside PostgreSQL "
            f"({type(exc).__name__}: {redact_text(str(exc))[:300]}). They stay in {database.db_schema}.store_outbox "
            "and the next sync applies them; start Redis / the object store (`movie-platform doctor` names the one "
            "that is down), then run sync_tmdb_changes again."
        )


def log_months(context: dg.OpExecutionContext, database: PostgresDatabase, months: dict[dt.date, dict]) -> None:
    """A movies_raw materialization per committed month, checked by the crawl's storage checks; then the
    cursor forgets them. A month that fails a blocking check is held by automation and fails the run, after
    every month is logged (the rows are committed either way: the next sync must not log them again)."""
    held = log_checked_materializations(
        context,
        database,
        "movies_raw",
        {month: {"source": "sync_tmdb_changes", **counts} for month, counts in months.items()},
        description="TMDB change sync",
    )
    if months:
        with database.connect("clearing the sync's pending months") as conn:
            conn.execute(
                sql.SQL("update {} set pending_months = '{{}}' where name = %s").format(database.ident(CURSOR_TABLE)),
                (CURSOR_NAME,),
            )
    if held:
        raise held_months_failure("movies_raw", held, "The TMDB change sync")


def log_pending(context: dg.OpExecutionContext, database: PostgresDatabase) -> int:
    """Months an earlier sync committed but was killed before logging: logged (and checked) now, so automation
    hears of them. A held month among them fails this run before it applies anything new."""
    with database.connect("reading the sync's pending months") as conn:
        if not existing_tables(conn, database.db_schema, [CURSOR_TABLE]):
            return 0
        row = conn.execute(
            sql.SQL("select pending_months from {} where name = %s").format(database.ident(CURSOR_TABLE)),
            (CURSOR_NAME,),
        ).fetchone()
    pending = list(row[0] or []) if row else []
    log_months(context, database, {month: {"relogged": 1} for month in pending})
    return len(pending)


@dg.job(description="Apply TMDB's change list (changed, moved, new and deleted movies) since the last sync.")
def sync_tmdb_changes():
    apply_tmdb_changes()
