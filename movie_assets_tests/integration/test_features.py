"""Feature layer on real services: Parquet offline store (folder and S3), Feast SQL registry, Redis online store."""

import datetime as dt
import os
import subprocess
import sys
import uuid

import dagster as dg
import numpy as np
import pandas as pd
import redis

from movie_assets.assets.features import feast_definitions, movie_features, online_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.feature_definitions import FEATURE_SERVICE
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.feast import FeastStore, feast_env
from movie_assets.resources.tmdb_sample import TmdbSampleSource
from movie_assets_tests.conftest import movie_platform_cli, platform_resources
from movie_platform.local_stack import REPO_ROOT

RANGE_TAGS = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-02-01"}


def feast_for(stack_env, store, project=None, s3_endpoint=None) -> FeastStore:
    return FeastStore(
        db_url=stack_env["MOVIE_DB_URL"],
        redis_url=stack_env["MOVIE_REDIS_URL"],
        storage_url=store.storage_url,
        s3_endpoint_url=s3_endpoint,
        project=project or f"t{uuid.uuid4().hex[:10]}",
    )


def run_features(resources):
    instance = dg.DagsterInstance.ephemeral()
    monthly = dg.materialize(
        [movies_raw, movies_clean, movie_features], resources=resources, tags=RANGE_TAGS, instance=instance
    )
    online = dg.materialize([feast_definitions, online_features], resources=resources, instance=instance)
    return monthly, online


def project_keys(stack_env, project: str) -> list[bytes]:
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    return [key for key in client.scan_iter(count=1000) if key.endswith(project.encode())]


def check_results(result) -> dict:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def test_features_to_online_store_on_a_folder(stack_env, database, object_store):
    feast = feast_for(stack_env, object_store)
    resources = {**platform_resources(database, object_store, TmdbSampleSource()), "feast": feast}
    monthly, online = run_features(resources)
    for key in ("2024-01-01", "2024-02-01"):
        assert object_store.path_for(FEATURES_OBJECT_PATH, key).exists(), key
    with database.connect() as conn:
        clean = conn.execute(f'select count(*) from "{database.db_schema}".movies_clean').fetchone()[0]
        features = conn.execute(f'select count(*) from "{database.db_schema}".features').fetchone()[0]
    assert features == clean > 200
    assert check_results(online) == {"online_keys_present": True, "online_matches_offline": True}
    metadata = online.asset_materializations_for_node("online_features")[0].metadata
    assert (
        metadata["rows"].value == clean
        and metadata["entities"].value == clean
        and metadata["movies_written"].value == clean
    )

    keys = project_keys(stack_env, feast.project)
    assert len(keys) == clean
    ttls = [redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"]).ttl(k) for k in keys[:20]]
    assert ttls == [-1] * len(ttls), f"online keys never expire, got TTLs {ttls}"

    # The direct reader sees exactly what the Feast SDK sees.
    from movie_assets.resources.online_writer import read_latest

    store = feast.store()
    ids = read_ids(object_store)[:50] + [1]
    sdk = pd.DataFrame(
        store.get_online_features(
            features=store.get_feature_service(FEATURE_SERVICE), entity_rows=[{"movie_id": i} for i in ids]
        ).to_dict()
    ).set_index("movie_id")
    direct = read_latest(store, store.get_feature_view("movie_features"), ids)
    pd.testing.assert_frame_equal(direct, sdk[direct.columns].astype("float64"), check_names=False)
    assert direct.loc[1].isna().all()

    # Two years on, with no materialization in between: every movie is still served and covered.
    from movie_assets.checks import online_keys_match_offline
    from movie_assets.domain import clock

    with clock.clock_at(clock.now() + dt.timedelta(days=730)):
        aged = read_latest(store, store.get_feature_view("movie_features"), ids)
        coverage = online_keys_match_offline(feast, object_store)
    pd.testing.assert_frame_equal(aged, direct)
    assert coverage.passed and coverage.metadata["missing"].value == 0
    assert coverage.metadata["movies"].value == clean

    # Idempotent: running again materializes nothing new and changes nothing.
    again = dg.materialize([online_features], resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert again.asset_materializations_for_node("online_features")[0].metadata["movies_written"].value == 0
    assert len(project_keys(stack_env, feast.project)) == clean
    assert check_results(again) == {"online_keys_present": True, "online_matches_offline": True}


def test_features_through_the_s3_api_server(stack_env, s3_stack_env, database, s3_object_store, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(var, s3_stack_env[var])  # Feast's Dask reader takes credentials from the environment
    feast = feast_for(stack_env, s3_object_store, s3_endpoint=s3_stack_env["MOVIE_S3_ENDPOINT_URL"])
    resources = {**platform_resources(database, s3_object_store, TmdbSampleSource()), "feast": feast}
    _, online = run_features(resources)
    assert s3_object_store.path_for(FEATURES_OBJECT_PATH, "2024-01-01").exists()
    assert check_results(online) == {"online_keys_present": True, "online_matches_offline": True}
    store = feast.store()
    assert store.get_data_source("movie_features_source").path.startswith("s3://")
    entity_df = pd.DataFrame(
        {
            "movie_id": [int(k) for k in read_ids(s3_object_store)[:5]],
            "event_timestamp": [pd.Timestamp.now(tz="UTC")] * 5,
        }
    )
    training = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(FEATURE_SERVICE)
    ).to_df()
    assert training["runtime"].notna().any(), "Feast read the S3 Parquet through the endpoint"


def read_ids(store) -> list[int]:
    return pd.read_parquet(store.path_for(FEATURES_OBJECT_PATH, "2024-01-01").open("rb"))["movie_id"].tolist()


def test_point_in_time_join_never_returns_a_future_value(stack_env, object_store):
    t1 = pd.Timestamp("2024-03-01T00:00:00Z")
    t2 = pd.Timestamp("2024-03-10T00:00:00Z")
    rows = pd.DataFrame(
        {"movie_id": [1, 1], "event_timestamp": [t1, t2], "created": [t1, t2], "runtime": [100.0, 200.0]}
    )
    from movie_assets.domain.feature_engineering import FEATURE_NAMES

    for name in FEATURE_NAMES:
        if name not in rows:
            rows[name] = (
                0.0 if name in ("log_budget", "log_revenue", "log_vote_count", "popularity", "release_days") else 0
            )
    path = object_store.path_for(FEATURES_OBJECT_PATH, "2024-01-01")
    path.parent.mkdir(parents=True)
    rows.to_parquet(path.path, index=False)
    feast = feast_for(stack_env, object_store)
    store = feast.store()
    store.apply(list(feast.definitions().values()))
    entity_df = pd.DataFrame(
        {
            "movie_id": [1, 1, 1, 1],
            "event_timestamp": [
                pd.Timestamp("2024-02-28T00:00:00Z"),
                pd.Timestamp("2024-03-05T00:00:00Z"),
                pd.Timestamp("2024-03-10T00:00:00Z"),
                pd.Timestamp("2024-08-01T00:00:00Z"),
            ],
        }
    )
    joined = store.get_historical_features(entity_df=entity_df, features=["movie_features:runtime"]).to_df()
    # Feast's file store drops entity rows without a usable value; a missing row and NaN mean the same.
    values = {ts: v for ts, v in zip(joined["event_timestamp"], joined["runtime"], strict=True) if not pd.isna(v)}
    assert pd.Timestamp("2024-02-28T00:00:00Z") not in values, "no value existed yet"
    assert values[pd.Timestamp("2024-03-05T00:00:00Z")] == 100.0, "the value of t1; t2's value lies in the future"
    assert values[pd.Timestamp("2024-03-10T00:00:00Z")] == 200.0
    assert values[pd.Timestamp("2024-08-01T00:00:00Z")] == 200.0, "no TTL: the newest row holds however old"


def test_cli_lookup_and_feast_cli_share_the_registry(demo_run, test_stack, stack_env):
    """The default project as a user has it after `make demo`.

    Online lookup by the CLI, and `feast` in feature_repo/ sees it.
    """
    assert demo_run.returncode == 0, demo_run.stderr[-2000:]
    from movie_assets.resources.object_store import object_root_for
    from movie_assets.settings import Settings

    store = object_root_for(Settings.from_env(stack_env))
    part = next(iter(sorted((store / "features" / "movie_features").glob("release_month=*/part.parquet"))))
    movie_id = int(pd.read_parquet(part.open("rb"))["movie_id"].iloc[0])
    env = {**os.environ, **stack_env, "MOVIE_PLATFORM_STATE_DIR": str(test_stack.state_dir)}
    lookup = movie_platform_cli("features", str(movie_id), env=env)
    assert lookup.returncode == 0, lookup.stderr[-2000:]
    assert "runtime" in lookup.stdout and "genre_drama" in lookup.stdout
    missing = movie_platform_cli("features", "1", env=env)
    assert missing.returncode == 1 and "not in the online store: [1]" in missing.stderr
    feast_cli = str(os.path.join(os.path.dirname(sys.executable), "feast"))
    listing = subprocess.run(
        [feast_cli, "-c", "feature_repo", "feature-services", "list"],
        capture_output=True,
        text=True,
        env={**env, **feast_env(env)},
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert FEATURE_SERVICE in listing.stdout


def test_parallel_materialization_writes_what_stock_feast_writes(stack_env, object_store):
    from movie_assets.domain.feature_engineering import FEATURE_NAMES, FLOAT_FEATURES
    from movie_assets.resources.online_materialize import materialize_parallel

    event = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=2)
    rows = pd.DataFrame({"movie_id": range(1, 301), "event_timestamp": event, "created": event})
    for i, name in enumerate(FEATURE_NAMES):
        rows[name] = [float(v * (i + 1)) if name in FLOAT_FEATURES else v % 2 for v in range(300)]
    rows.loc[5, "runtime"] = None
    path = object_store.path_for(FEATURES_OBJECT_PATH, "2024-06-01")
    path.parent.mkdir(parents=True)
    rows.to_parquet(path.path, index=False)
    start, end = (event - pd.Timedelta(days=30)).to_pydatetime(), (event + pd.Timedelta(days=1)).to_pydatetime()
    stock, fast = feast_for(stack_env, object_store), feast_for(stack_env, object_store)
    for feast in (stock, fast):
        feast.store().apply(list(feast.definitions().values()))
    stock.store().materialize(start_date=start, end_date=end, feature_views=["movie_features"])
    done = materialize_parallel(fast, start, end, workers=2, parallel_from_rows=1)
    assert done.written == 300 and done.path == "parallel"

    def online(feast):
        store = feast.store()
        return pd.DataFrame(
            store.get_online_features(
                features=store.get_feature_service(FEATURE_SERVICE),
                entity_rows=[{"movie_id": i} for i in range(1, 301)],
            ).to_dict()
        )

    pd.testing.assert_frame_equal(online(stock), online(fast))
    # Byte for byte: the same hash fields and values under each project's keys.
    from movie_assets.resources.online_writer import FeastRedisLayout

    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    stores = [feast.store() for feast in (stock, fast)]
    layouts = [FeastRedisLayout(store, store.get_feature_view("movie_features")) for store in stores]
    ids = rows["movie_id"].to_numpy()
    for stock_key, fast_key in zip(layouts[0].keys(ids), layouts[1].keys(ids), strict=True):
        assert client.hgetall(stock_key) == client.hgetall(fast_key)
    assert online(fast)["runtime"].isna().sum() == 1
    assert fast.store().get_feature_view("movie_features").most_recent_end_time == end
    assert len(project_keys(stack_env, fast.project)) == 300


def test_history_grows_by_change_and_is_kept_by_time(stack_env, database, object_store, monkeypatch):
    """Unchanged re-materializations add no history; a change adds its old row, which the join returns before it,
    and which goes once its successor has held for longer than MOVIE_FEATURE_HISTORY_DAYS."""
    from movie_assets.domain import clock
    from movie_assets.domain.point_in_time import historical_features

    monkeypatch.setenv("MOVIE_FEATURE_HISTORY_DAYS", "400")
    month = "2024-01-01"
    feast = feast_for(stack_env, object_store)
    resources = {**platform_resources(database, object_store, TmdbSampleSource()), "feast": feast}
    schema = database.db_schema

    def rows(text: str, params=()) -> list[tuple]:
        with database.connect() as conn:
            return conn.execute(text.format(schema=f'"{schema}"'), params).fetchall()

    def materialize(at: dt.datetime, graph=(movies_clean, movie_features)) -> None:
        with clock.clock_at(at):
            assets = [movies_raw, movies_clean, movie_features]
            assert dg.materialize(assets, selection=list(graph), resources=resources, partition_key=month).success

    def history_objects() -> list:
        folder = object_store.path_for(FEATURES_OBJECT_PATH, month).parent / "history"
        return sorted(p for p in folder.iterdir() if p.name.endswith(".parquet")) if folder.exists() else []

    t0 = clock.now().replace(microsecond=0)
    materialize(t0, graph=(movies_raw, movies_clean, movie_features))
    for day in (1, 2, 3):
        materialize(t0 + dt.timedelta(days=day))
        assert rows("select count(*) from {schema}.features_history") == [(0,)]
        assert history_objects() == []
        assert rows("select distinct event_timestamp from {schema}.features") == [(t0,)], "unchanged: valid since t0"

    changed, other = (r[0] for r in rows("select movie_id from {schema}.movies_raw order by movie_id limit 2"))
    (old_votes,) = rows("select vote_count from {schema}.movies_clean where movie_id = %s", (changed,))[0]
    rows("update {schema}.movies_raw set vote_count = vote_count + 5000 where movie_id = %s returning 1", (changed,))
    t1 = t0 + dt.timedelta(days=4)
    materialize(t1)
    assert rows("select movie_id, event_timestamp, superseded_at from {schema}.features_history") == [(changed, t0, t1)]
    (archived,) = history_objects()
    assert pd.read_parquet(archived.open("rb"))["movie_id"].tolist() == [changed]

    store = feast.store()
    store.apply(list(feast.definitions().values()))

    def joined(at: dt.datetime) -> dict[int, float]:
        entity = pd.DataFrame({"movie_id": [changed, other], "event_timestamp": [pd.Timestamp(at)] * 2})
        frame = historical_features(store, entity, FEATURE_SERVICE)
        return dict(zip(frame["movie_id"], frame["log_vote_count"], strict=True))

    before = joined(t0 + dt.timedelta(days=2))
    assert before[changed] == np.log1p(old_votes) and not np.isnan(before[other])
    assert joined(t1 + dt.timedelta(days=1))[changed] == np.log1p(old_votes + 5000)

    # Inside the window the old row stays; past it (its successor held > 400 days) it goes from the table, and
    # from the offline store once every row of its object is past (objects hold a calendar month of changes).
    # Joins inside the window are still right (the new value; the unchanged movie's t0 row however old).
    materialize(t1 + dt.timedelta(days=399))
    assert len(history_objects()) == 1 and rows("select count(*) from {schema}.features_history") == [(1,)]
    materialize(t1 + dt.timedelta(days=401))
    assert rows("select count(*) from {schema}.features_history") == [(0,)]
    month_after = (t1.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    assert len(history_objects()) == (1 if month_after + dt.timedelta(days=400) > t1 + dt.timedelta(days=401) else 0)
    late = month_after + dt.timedelta(days=401)
    materialize(late)
    assert history_objects() == []
    inside = joined(late - dt.timedelta(days=399))
    assert inside[changed] == np.log1p(old_votes + 5000) and inside[other] == before[other]
