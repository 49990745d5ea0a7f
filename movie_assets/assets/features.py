"""Features: movie_features Parquet (Feast's offline store) and Postgres `features`; Feast apply; Redis online store."""

import contextlib
import datetime as dt
import io
import time

import dagster as dg
import numpy as np
import pandas as pd
from psycopg import sql

from movie_assets.checks import history_window, latest_offline, online_coverage, read_offline
from movie_assets.domain import clock
from movie_assets.domain.feature_engineering import (
    FEATURE_NAMES,
    FEATURE_TABLE_COLUMNS,
    build_features,
    carry_unchanged,
)
from movie_assets.feature_definitions import FEATURE_SERVICE, definitions_version, feature_rows_version
from movie_assets.object_layout import FEATURES_HISTORY_PATH, FEATURES_OBJECT_PATH
from movie_assets.partitions import monthly_asset, months_in, partition_window
from movie_assets.resources.feast import FIRST_MATERIALIZATION_START, FeastStore
from movie_assets.resources.object_store import ObjectStore, current_feature_rows, drop_history_before
from movie_assets.resources.online_materialize import materialize_parallel
from movie_assets.resources.online_writer import OnlineReader, persist_keys
from movie_assets.resources.postgres import PostgresDatabase, copy_frame, existing_tables
from movie_assets.settings import redact_text, redact_url

SKEW_SAMPLE = 200
OVERLAP = dt.timedelta(hours=6)


# A history row is a superseded version: valid from `event_timestamp` until `superseded_at`.
FEATURE_HISTORY_COLUMNS = {**FEATURE_TABLE_COLUMNS, "superseded_at": "timestamp with time zone", "run_id": "text"}


def record_history(database: PostgresDatabase, superseded: pd.DataFrame, window, cutoff: dt.datetime) -> None:
    """Add the superseded versions to `features_history` (once each), then drop those superseded before `cutoff`.

    A version is its (movie_id, event_timestamp), so a retried run adds nothing twice. Rows of
    the count-based layout (no `superseded_at`) age by their event time.
    """
    history = database.ident("features_history")
    with database.connect("recording feature history") as conn:
        database.ensure_table(conn, "features_history", FEATURE_HISTORY_COLUMNS, "release_month")
        with conn.transaction():
            database.lock_months(conn, "features_history", [start for start, _ in months_in(window)])
            database.add_missing_columns(conn, "features_history", FEATURE_HISTORY_COLUMNS)
            if len(superseded):
                conn.execute(
                    sql.SQL(
                        "delete from {} where (movie_id, event_timestamp) in "
                        "(select * from unnest(%s::bigint[], %s::timestamptz[]))"
                    ).format(history),
                    (
                        superseded["movie_id"].astype("int64").tolist(),
                        list(pd.to_datetime(superseded["event_timestamp"], utc=True)),
                    ),
                )
                copy_frame(conn, history, FEATURE_HISTORY_COLUMNS, superseded)
            conn.execute(
                sql.SQL(
                    "delete from {} where release_month >= %s and release_month < %s "
                    "and coalesce(superseded_at, event_timestamp) < %s"
                ).format(history),
                (window[0], window[1], cutoff),
            )


def archive_superseded(
    object_store: ObjectStore, partition_key: str, superseded: pd.DataFrame, at: dt.datetime, cutoff: dt.datetime
) -> int:
    """Add the month's superseded rows to the history object of `at`'s calendar month; drop old ones.

    One object per release month and month of supersession (`history/materialized=YYYY-MM.parquet`),
    rewritten with the new rows, never a full copy: storage grows with changes and the objects a
    point-in-time join opens stay few (one per run made thousands a year). A retried run adds
    nothing twice. Returns how many history objects the month keeps.
    """
    if len(superseded):
        path = FEATURES_HISTORY_PATH.replace("{materialized}", f"{pd.Timestamp(at):%Y-%m}")
        if object_store.path_for(path, partition_key).exists():
            earlier = pd.read_parquet(io.BytesIO(object_store.read(path, partition_key)))
            superseded = pd.concat([earlier, superseded], ignore_index=True).drop_duplicates(
                ["movie_id", "event_timestamp"]
            )
        object_store.write(path, partition_key, superseded.to_parquet(index=False))
    return drop_history_before(object_store, partition_key, cutoff)


@monthly_asset(
    group_name="features",
    kinds={"s3", "parquet", "pandas"},
    metadata={"object_path": FEATURES_OBJECT_PATH},
    code_version=feature_rows_version(),
)
def movie_features(
    context: dg.AssetExecutionContext,
    movies_clean: pd.DataFrame,
    database: PostgresDatabase,
    object_store: ObjectStore,
) -> dg.MaterializeResult:
    """Engineered features, one row per movie, valid from its `event_timestamp`.

    One Parquet object per release month (Feast's offline source) and the same rows in
    Postgres `features` for SQL. A movie whose values did not change keeps its earlier
    `event_timestamp`; changed and new movies get this run's time. The rows they replace
    (and those of movies that left the month) go to `history/` and `features_history`, kept
    for MOVIE_FEATURE_HISTORY_DAYS after being superseded, so point-in-time joins see the
    value of their time.

    Every store of the months changes under their `feature_store` locks (LOCK_ORDER), which the
    change sync takes to remove movies: a movie removed after `movies_clean` was read is left out,
    and the sync's removals never rewrite a Parquet object this run is writing.
    """
    window = partition_window(context)
    months = [dt.date.fromisoformat(key) for key in context.partition_keys]
    with database.holding({"feature_store": months}, "writing movie_features") as conn:
        current = current_feature_rows(object_store, context.partition_keys)
        gone = removed_movies(conn, database, [*movies_clean["movie_id"], *current["movie_id"]])
        movies_clean = movies_clean[~movies_clean["movie_id"].isin(gone)].reset_index(drop=True)
        event_time = clock.now().replace(microsecond=0)
        fresh = build_features(movies_clean, event_time)
        features, superseded = carry_unchanged(fresh, current[~current["movie_id"].isin(gone)])
        release = pd.to_datetime(movies_clean["release_month"])
        months_of_rows = release.dt.strftime("%Y-%m-01").to_numpy() if len(movies_clean) else np.array([])
        table = features.assign(release_month=release.dt.date.to_numpy() if len(movies_clean) else [])
        cutoff = event_time - history_window()
        record_history(database, superseded.assign(superseded_at=event_time, run_id=context.run.run_id), window, cutoff)
        superseded_months = superseded["release_month"].astype(str).to_numpy() if len(superseded) else np.array([])
        kept = sum(
            archive_superseded(
                object_store,
                key,
                superseded[superseded_months == key].drop(columns="release_month"),
                event_time,
                cutoff,
            )
            for key in context.partition_keys
        )
        database.replace_rows("features", FEATURE_TABLE_COLUMNS, table, "release_month", window)
        objects = {key: features[months_of_rows == key].reset_index(drop=True) for key in context.partition_keys}
        written = object_store.write_objects(FEATURES_OBJECT_PATH, objects)
    if gone:
        context.log.info(f"left out {len(gone)} movies a change sync removed while this run read its input")
    changed = int((pd.to_datetime(features["event_timestamp"], utc=True) == pd.Timestamp(event_time)).sum())
    return dg.MaterializeResult(
        metadata={
            "rows": len(features),
            "features": len(FEATURE_NAMES),
            "event_timestamp": event_time.isoformat(),
            "changed_or_new_movies": changed,
            "unchanged_movies": len(features) - changed,
            "superseded_rows": len(superseded),
            "removed_while_running": len(gone),
            "postgres_table": "features",
            "history_objects_kept": kept,
            "history_days": history_window().days,
            **written,
            "preview": dg.MetadataValue.md(features.head(5).to_markdown(index=False)),
        }
    )


def removed_movies(conn, database: PostgresDatabase, movie_ids: list) -> set[int]:
    """Of `movie_ids`, those a change sync removed and no later write brought back (read under the month locks)."""
    if not movie_ids or len(existing_tables(conn, database.db_schema, ["movies_removed", "movies_raw"])) < 2:
        return set()
    ids = sorted({int(i) for i in movie_ids})
    rows = conn.execute(
        sql.SQL(
            "select movie_id from {removed} where movie_id = any(%s) "
            "except select movie_id from {raw} where movie_id = any(%s)"
        ).format(removed=database.ident("movies_removed"), raw=database.ident("movies_raw")),
        (ids, ids),
    ).fetchall()
    return {row[0] for row in rows}


@dg.asset(group_name="features", deps=["movie_features"], kinds={"feast"}, code_version=definitions_version())
def feast_definitions(context: dg.AssetExecutionContext, feast: FeastStore) -> dg.MaterializeResult:
    """`feast apply` of the definitions in `feature_repo/` (Entity, FileSource, FeatureView, FeatureService)."""
    store = feast.store()
    objects = feast.definitions()
    store.apply(list(objects.values()))
    view, service = objects["movie_features"], objects[FEATURE_SERVICE]
    persisted = persist_online_keys(feast, view)
    context.log.info(
        f"applied project {feast.project}: feature view {view.name} ({len(view.features)} features), service "
        f"{service.name}; {persisted} online keys no longer expire"
    )
    return dg.MaterializeResult(
        metadata={
            "project": feast.project,
            "feature_views": dg.MetadataValue.md(
                f"| view | features | ttl | source |\n|---|---|---|---|\n"
                f"| {view.name} | {len(view.features)} | {view.ttl} | {view.batch_source.path} |"
            ),
            "feature_services": service.name,
            "definitions_version": definitions_version(),
            "online_keys_persisted": persisted,
            "features": ", ".join(f.name for f in view.features),
        }
    )


def persist_online_keys(feast: FeastStore, view) -> int:
    """With no view TTL and no key TTL, keys written under an earlier TTL lose their expiry (else 0).

    Unchanged movies are never rewritten, so their old expiry would still drop them silently.
    """
    if (view.ttl and view.ttl.total_seconds() > 0) or feast.key_ttl_seconds:
        return 0
    import redis

    store = feast.store()
    try:
        return persist_keys(store, store.get_feature_view(view.name))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise dg.Failure(
            description=f"Redis (the Feast online store) at {redact_url(feast.redis_url)} is unreachable: "
            f"{redact_text(str(exc)) or type(exc).__name__}. The definitions are applied, but keys written under "
            "an earlier TTL may still expire: start Redis (`movie-platform up`) or fix MOVIE_REDIS_URL, then "
            "re-run feast_definitions.",
            allow_retries=True,
        ) from None


@dg.asset(
    group_name="features",
    deps=["feast_definitions", "movie_features"],
    kinds={"redis", "feast"},
    check_specs=[
        dg.AssetCheckSpec(
            "online_keys_present",
            asset="online_features",
            description="every movie of the newest offline rows has online values, however old its row, and no "
            "online key belongs to a movie the offline store no longer has (both name the ids)",
        ),
        dg.AssetCheckSpec(
            "online_matches_offline",
            asset="online_features",
            description="sampled online values equal the latest offline values",
        ),
    ],
)
def online_features(
    context: dg.AssetExecutionContext, feast: FeastStore, object_store: ObjectStore, database: PostgresDatabase
) -> dg.MaterializeResult:
    """Materialize what is new in the offline store into Redis (Feast's format, written by all cores).

    Starts where the registry's last materialization ended (the first time: at the
    beginning, not at now - ttl, which would silently skip old features). Holds the
    `online_store` lock, which the change sync's removals take too: a movie it removes
    is never written back from offline rows read before the removal.
    """
    with database.holding({"online_store": None}, "materializing the online store"):
        return materialize_online(context, feast, object_store)


def materialize_online(
    context: dg.AssetExecutionContext, feast: FeastStore, object_store: ObjectStore
) -> dg.MaterializeResult:
    store = feast.store()
    view = store.get_feature_view("movie_features")
    # Reach back a little: a movie_features run stamps its rows when it starts and lands them when
    # it ends, so rows can arrive behind the last recorded end. Newer-wins makes re-writes no-ops.
    start = (view.most_recent_end_time - OVERLAP) if view.most_recent_end_time else FIRST_MATERIALIZATION_START
    end = clock.now()
    offline = read_offline(object_store, columns=OFFLINE_KEYS)
    new_rows = (
        int(((offline["event_timestamp"] >= start) & (offline["event_timestamp"] < end)).sum()) if len(offline) else 0
    )
    started = time.monotonic()
    with redis_errors_named(feast, start):
        done = materialize_parallel(feast, start, end, log=context.log)
        seconds = time.monotonic() - started
        latest = latest_offline(offline)
        coverage, skew = online_vs_offline(store, object_store, latest)
    context.log.info(
        f"materialized {new_rows} new rows ({done.written} movies written by {done.processes} {done.path} "
        f"process(es)) ({start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}) in {seconds:.1f}s"
    )
    return dg.MaterializeResult(
        metadata={
            "rows": new_rows,
            "movies_written": done.written,
            "write_path": done.path,
            "writer_processes": done.processes,
            "entities": len(latest),
            "window": f"{start.isoformat()} .. {end.isoformat()}",
            "duration_s": round(seconds, 2),
            "rows_per_second": round(new_rows / seconds) if seconds > 0 else new_rows,
            "key_expiry": f"{feast.key_ttl_seconds}s" if feast.key_ttl_seconds else "none",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="online_keys_present",
                passed=coverage["missing"] == 0 and coverage["stale_online_keys"] == 0,
                metadata=coverage,
            ),
            dg.AssetCheckResult(
                check_name="online_matches_offline", passed=skew["mismatched_values"] == 0, metadata=skew
            ),
        ],
    )


@contextlib.contextmanager
def redis_errors_named(feast: FeastStore, start: dt.datetime):
    """A Redis outage fails the run with one message naming Redis and the fix, not a redis-py traceback.

    The registry's interval is recorded only after every write, so the retry rewrites from `start`.
    """
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise dg.Failure(
            description=f"Redis (the Feast online store) at {redact_url(feast.redis_url)} is unreachable: "
            f"{redact_text(str(exc)) or type(exc).__name__}. Start it (`movie-platform up`) or fix MOVIE_REDIS_URL, "
            f"then re-run online_features; nothing was recorded as materialized, so the retry writes "
            f"everything from {start:%Y-%m-%d %H:%M} UTC again.",
            allow_retries=True,
        ) from None


OFFLINE_KEYS = ["movie_id", "event_timestamp", "created"]


def online_vs_offline(
    store, object_store: ObjectStore, latest: pd.DataFrame, sample: int = SKEW_SAMPLE
) -> tuple[dict, dict]:
    """(coverage both ways, value comparison on a sample): the offline/online skew check.

    Coverage asks Redis whether each movie's hash holds Feast's timestamp (pipelined, in
    batches) and which keys of the project exist (SCAN); the sample is read through the
    Feast SDK, as a serving client would, among every movie (no row expires).
    """
    reader = OnlineReader(store, store.get_feature_view("movie_features"))
    coverage = online_coverage(reader, latest)
    if latest.empty:
        return coverage, {"sampled": 0, "mismatched_values": 0}
    picked_keys = latest.sample(n=min(sample, len(latest)), random_state=0)
    picked = latest_offline(read_offline(object_store, movie_ids=picked_keys["movie_id"]))
    picked = picked.merge(picked_keys[["movie_id", "event_timestamp"]], on=["movie_id", "event_timestamp"])
    online = pd.DataFrame(
        store.get_online_features(
            features=store.get_feature_service(FEATURE_SERVICE),
            entity_rows=[{"movie_id": int(i)} for i in picked["movie_id"]],
        ).to_dict()
    )
    mismatched = 0
    examples = []
    for name in FEATURE_NAMES:
        offline_values = pd.to_numeric(picked[name], errors="coerce").to_numpy(dtype="float64")
        online_values = pd.to_numeric(online[name], errors="coerce").to_numpy(dtype="float64")
        bad = ~np.isclose(offline_values, online_values, equal_nan=True)
        mismatched += int(bad.sum())
        if bad.any():
            examples.append(name)
    return coverage, {
        "sampled": len(picked),
        "mismatched_values": mismatched,
        "mismatched_features": str(examples[:5]),
    }
