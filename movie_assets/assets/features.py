"""Features: movie_features Parquet (Feast's offline store) and Postgres `features`; Feast apply; Redis online store."""

import contextlib
import datetime as dt
import io
import time

import dagster as dg
import numpy as np
import pandas as pd
from psycopg import sql
from pydantic import Field

from movie_assets.checks import latest_offline, online_coverage, read_offline
from movie_assets.domain import clock
from movie_assets.domain.feature_engineering import FEATURE_NAMES, FEATURE_TABLE_COLUMNS, build_features
from movie_assets.feature_definitions import FEATURE_SERVICE, definitions_version
from movie_assets.object_layout import FEATURES_HISTORY_PATH, FEATURES_OBJECT_PATH
from movie_assets.partitions import monthly_asset, months_in, partition_window
from movie_assets.resources.feast import FIRST_MATERIALIZATION_START, FeastStore
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.online_materialize import materialize_parallel
from movie_assets.resources.online_writer import OnlineReader
from movie_assets.resources.postgres import PostgresDatabase, copy_frame
from movie_assets.settings import redact_text, redact_url

SKEW_SAMPLE = 200
OVERLAP = dt.timedelta(hours=6)


class FeatureHistoryConfig(dg.Config):
    """How many earlier materializations of a month the offline store and `features_history` keep."""

    keep_materializations: int = Field(12, ge=0, description="per release month; 0 keeps only the current one")


FEATURE_HISTORY_COLUMNS = {**FEATURE_TABLE_COLUMNS, "run_id": "text"}


def record_history(database: PostgresDatabase, rows: pd.DataFrame, window, keep: int) -> None:
    """Append this run's rows to `features_history` (idempotent per run), then drop versions past `keep`."""
    history = database.ident("features_history")
    with database.connect("recording feature history") as conn:
        database.ensure_table(conn, "features_history", FEATURE_HISTORY_COLUMNS, "release_month")
        with conn.transaction():
            database.lock_months(conn, "features_history", [start for start, _ in months_in(window)])
            database.add_missing_columns(conn, "features_history", FEATURE_HISTORY_COLUMNS)
            run_ids = sorted(set(rows["run_id"]))
            conn.execute(sql.SQL("delete from {} where run_id = any(%s)").format(history), (run_ids,))
            copy_frame(conn, history, FEATURE_HISTORY_COLUMNS, rows)
            conn.execute(
                sql.SQL(
                    "delete from {h} h using (select release_month, event_timestamp, dense_rank() over "
                    "(partition by release_month order by event_timestamp desc) as age from {h} "
                    "where release_month >= %s and release_month < %s group by release_month, event_timestamp) old "
                    "where h.release_month = old.release_month and h.event_timestamp = old.event_timestamp "
                    "and old.age > %s"
                ).format(h=history),
                (window[0], window[1], keep + 1),
            )


def archive_current(object_store: ObjectStore, partition_key: str, keep: int) -> int:
    """Move the month's current Parquet into `history/` before it is replaced; keep the newest `keep` there.

    Returns how many history objects the month keeps.
    """
    if not object_store.path_for(FEATURES_OBJECT_PATH, partition_key).exists():
        return 0
    folder = object_store.path_for(FEATURES_HISTORY_PATH.replace("{materialized}", "x"), partition_key).parent
    if keep > 0:
        data = object_store.read(FEATURES_OBJECT_PATH, partition_key)
        stamps = pd.read_parquet(io.BytesIO(data), columns=["event_timestamp"])["event_timestamp"]
        if len(stamps):
            name = f"{pd.Timestamp(stamps.max()):%Y%m%dT%H%M%SZ}"
            object_store.write(FEATURES_HISTORY_PATH.replace("{materialized}", name), partition_key, data)
    if not folder.exists():
        return 0
    versions = sorted(p for p in folder.iterdir() if p.name.endswith(".parquet"))
    for old in versions[: max(0, len(versions) - keep)]:
        old.unlink()
    return min(len(versions), keep)


@monthly_asset(
    io_manager_key="object_store_io_manager",
    group_name="features",
    kinds={"s3", "parquet", "pandas"},
    metadata={"object_path": FEATURES_OBJECT_PATH},
)
def movie_features(
    context: dg.AssetExecutionContext,
    config: FeatureHistoryConfig,
    movies_clean: pd.DataFrame,
    database: PostgresDatabase,
    object_store: ObjectStore,
) -> dict[str, pd.DataFrame]:
    """Engineered features, one row per movie, as of this materialization (`event_timestamp`).

    One Parquet object per release month (Feast's offline source) and the same rows in
    Postgres `features` for SQL. The month's earlier materializations stay, in `history/`
    and in `features_history`, so point-in-time joins see the value of their time.
    """
    window = partition_window(context)
    event_time = clock.now().replace(microsecond=0)
    features = build_features(movies_clean, event_time)
    release = pd.to_datetime(movies_clean["release_month"])
    months = release.dt.strftime("%Y-%m-01").to_numpy() if len(movies_clean) else np.array([])
    table = features.assign(release_month=release.dt.date.to_numpy() if len(movies_clean) else [])
    database.replace_rows("features", FEATURE_TABLE_COLUMNS, table, "release_month", window)
    record_history(database, table.assign(run_id=context.run.run_id), window, config.keep_materializations)
    archived = sum(archive_current(object_store, key, config.keep_materializations) for key in context.partition_keys)
    objects = {key: features[months == key].reset_index(drop=True) for key in context.partition_keys}
    context.add_output_metadata(
        {
            "rows": len(features),
            "features": len(FEATURE_NAMES),
            "event_timestamp": event_time.isoformat(),
            "postgres_table": "features",
            "history_objects_kept": archived,
            "keep_materializations": config.keep_materializations,
            "preview": dg.MetadataValue.md(features.head(5).to_markdown(index=False)),
        }
    )
    return objects


@dg.asset(group_name="features", deps=["movie_features"], kinds={"feast"}, code_version=definitions_version())
def feast_definitions(context: dg.AssetExecutionContext, feast: FeastStore) -> dg.MaterializeResult:
    """`feast apply` of the definitions in `feature_repo/` (Entity, FileSource, FeatureView, FeatureService)."""
    store = feast.store()
    objects = feast.definitions()
    store.apply(list(objects.values()))
    view, service = objects["movie_features"], objects[FEATURE_SERVICE]
    context.log.info(
        f"applied project {feast.project}: feature view {view.name} ({len(view.features)} features), service "
        f"{service.name}"
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
            "features": ", ".join(f.name for f in view.features),
        }
    )


@dg.asset(
    group_name="features",
    deps=["feast_definitions", "movie_features"],
    kinds={"redis", "feast"},
    check_specs=[
        dg.AssetCheckSpec(
            "online_keys_present",
            asset="online_features",
            description="every movie whose newest offline row is within the view's TTL has online values, and no "
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
    context: dg.AssetExecutionContext, feast: FeastStore, object_store: ObjectStore
) -> dg.MaterializeResult:
    """Materialize what is new in the offline store into Redis (Feast's format, written by all cores).

    Starts where the registry's last materialization ended (the first time: at the
    beginning, not at now - ttl, which would silently skip old features).
    """
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
            "key_ttl_seconds": feast.key_ttl_seconds,
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
    Feast SDK, as a serving client would, among movies whose row is within the view's TTL
    (older ones are not served).
    """
    now = clock.now()
    reader = OnlineReader(store, store.get_feature_view("movie_features"))
    coverage = online_coverage(reader, latest, now)
    ttl = reader.layout.view.ttl
    if ttl and ttl.total_seconds() > 0 and len(latest):
        latest = latest[pd.to_datetime(latest["event_timestamp"], utc=True) >= pd.Timestamp(now - ttl)]
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
