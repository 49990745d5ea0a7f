"""Features: movie_features Parquet (Feast's offline store) and Postgres `features`; Feast apply; Redis online store."""

import contextlib
import datetime as dt
import time

import dagster as dg
import numpy as np
import pandas as pd

from movie_assets.domain.feature_engineering import FEATURE_NAMES, FEATURE_TABLE_COLUMNS, build_features
from movie_assets.feature_definitions import FEATURE_SERVICE, definitions_version
from movie_assets.object_layout import FEATURES_OBJECT_PATH, FEATURES_PREFIX
from movie_assets.partitions import monthly_asset, partition_window
from movie_assets.resources.feast import FIRST_MATERIALIZATION_START, FeastStore
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.online_materialize import materialize_parallel
from movie_assets.resources.online_writer import OnlineReader
from movie_assets.resources.postgres import PostgresDatabase
from movie_assets.settings import redact_text, redact_url

SKEW_SAMPLE = 200
OVERLAP = dt.timedelta(hours=6)


@monthly_asset(
    io_manager_key="object_store_io_manager",
    group_name="features",
    kinds={"s3", "parquet", "pandas"},
    metadata={"object_path": FEATURES_OBJECT_PATH},
)
def movie_features(
    context: dg.AssetExecutionContext, movies_clean: pd.DataFrame, database: PostgresDatabase
) -> dict[str, pd.DataFrame]:
    """Engineered features, one row per movie, as of this materialization (`event_timestamp`).

    One Parquet object per release month (Feast's offline source) and the same rows in
    Postgres `features` for SQL.
    """
    window = partition_window(context)
    event_time = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    features = build_features(movies_clean, event_time)
    release = pd.to_datetime(movies_clean["release_month"])
    months = release.dt.strftime("%Y-%m-01").to_numpy() if len(movies_clean) else np.array([])
    table = features.assign(release_month=release.dt.date.to_numpy() if len(movies_clean) else [])
    database.replace_rows("features", FEATURE_TABLE_COLUMNS, table, "release_month", window)
    objects = {key: features[months == key].reset_index(drop=True) for key in context.partition_keys}
    context.add_output_metadata(
        {
            "rows": len(features),
            "features": len(FEATURE_NAMES),
            "event_timestamp": event_time.isoformat(),
            "postgres_table": "features",
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
            description="every movie of the offline store has online values",
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
    end = dt.datetime.now(dt.timezone.utc)
    offline = read_offline(object_store, columns=OFFLINE_KEYS)
    new_rows = (
        int(((offline["event_timestamp"] >= start) & (offline["event_timestamp"] < end)).sum()) if len(offline) else 0
    )
    started = time.monotonic()
    with redis_errors_named(feast, start):
        written = materialize_parallel(feast, start, end)
        seconds = time.monotonic() - started
        latest = latest_offline(offline)
        coverage, skew = online_vs_offline(store, object_store, latest)
    context.log.info(
        f"materialized {new_rows} new rows ({written} movies written) ({start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}) "
        f"in {seconds:.1f}s"
    )
    return dg.MaterializeResult(
        metadata={
            "rows": new_rows,
            "movies_written": written,
            "entities": len(latest),
            "window": f"{start.isoformat()} .. {end.isoformat()}",
            "duration_s": round(seconds, 2),
            "rows_per_second": round(new_rows / seconds) if seconds > 0 else new_rows,
            "key_ttl_seconds": feast.key_ttl_seconds,
        },
        check_results=[
            dg.AssetCheckResult(check_name="online_keys_present", passed=coverage["missing"] == 0, metadata=coverage),
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


def online_vs_offline(
    store, object_store: ObjectStore, latest: pd.DataFrame, sample: int = SKEW_SAMPLE
) -> tuple[dict, dict]:
    """(coverage of all movies, value comparison on a sample): the offline/online skew check.

    Coverage asks Redis whether each movie's hash holds Feast's timestamp (pipelined, in
    batches); the sample is read through the Feast SDK, as a serving client would.
    """
    if latest.empty:
        return {"movies": 0, "missing": 0}, {"sampled": 0, "mismatched_values": 0}
    reader = OnlineReader(store, store.get_feature_view("movie_features"))
    missing = int((~reader.present(latest["movie_id"].to_numpy())).sum())
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
    return {"movies": len(latest), "missing": missing}, {
        "sampled": len(picked),
        "mismatched_values": mismatched,
        "mismatched_features": str(examples[:5]),
    }
