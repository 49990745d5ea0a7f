"""The platform keeps itself fresh under the real `dagster-daemon run`, with nothing launched by hand.

Setup writes what a first day leaves behind (six crawled months, features online, a
champion model, predictions) into an instance of the test's own. Then TMDB has a day of
changes, and the test only starts the daemon: `tmdb_changes_sensor` runs the sync, the
automation condition sensor runs everything below it. Within 15 minutes every touched
movie is current in movies_clean, features, the Feast online store (equal to the newest
offline row) and predictions, and the deleted ones are gone.
"""

import datetime as dt
import math
import signal
import time
import uuid

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from movie_assets.assets.features import feast_definitions, movie_features, online_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.assets.training import movie_rating_model, movie_rating_predictions
from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.serving import online_feature_rows
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import movies_for_month
from movie_assets_tests.conftest import own_feast_project, platform_resources, stop_process_group
from movie_assets_tests.integration.dagster_instance import daemon_env, own_instance_home, start_daemon
from movie_assets_tests.integration.test_change_sync import MONTHS, RANGE_TAGS, a_day_of_changes, query, stored_ids
from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer
from movie_platform.local_stack import tail

DEADLINE_S = 15 * 60


@pytest.fixture
def instance_home(stack_env, tmp_path):
    """A Dagster instance of the test's own (PostgreSQL storage, queued runs, pools), dropped afterwards."""
    with own_instance_home(stack_env["MOVIE_DB_URL"], tmp_path / "dagster_home", "dagster_daemon") as home:
        yield home


@pytest.fixture
def tracking(stack_env):
    name = f"daemon_{uuid.uuid4().hex[:8]}"
    tracking = MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"], experiment=name, registered_model=name)
    yield tracking
    MlflowClient(tracking.tracking_uri).delete_registered_model(name)


def first_day(resources: dict, instance: dg.DagsterInstance) -> None:
    """Crawl, features, online store, the first champion and its predictions, recorded in `instance`."""
    graph = [movies_raw, movies_clean, movie_features, feast_definitions, online_features, movie_rating_model]
    graph.append(movie_rating_predictions)
    for selection, tags in (
        ([movies_raw, movies_clean, movie_features], RANGE_TAGS),
        ([feast_definitions, online_features, movie_rating_model], None),
        ([movie_rating_predictions], RANGE_TAGS),
    ):
        result = dg.materialize(graph, selection=selection, resources=resources, tags=tags, instance=instance)
        assert result.success


def failed_runs(instance: dg.DagsterInstance) -> list[str]:
    """Each failed run with its first step error: the reason the platform did not catch up."""
    out = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        errors = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        text = errors[0].dagster_event.step_failure_data.error.to_string() if errors else "no step failure"
        out.append(f"{run.job_name} {run.tags.get('dagster/partition', '')}: {text[-1500:]}")
    return out


def same(online, offline) -> bool:
    """One feature value online and offline: equal, or missing in both."""
    missing = offline is None or math.isnan(float(offline)), online is None or math.isnan(float(online))
    return all(missing) or (not any(missing) and math.isclose(float(online), float(offline), rel_tol=1e-9))


def lagging(database, feast, touched: dict, since: dt.datetime) -> dict[str, list[int]]:
    """Per store, the touched movies that do not show their change yet (empty everywhere = caught up)."""
    live = touched["changed"] + touched["moved"] + touched["new"]
    votes = {m: int(v) for m, v in query(database, "select movie_id, vote_count from {schema}.movies_raw")}
    clean = dict(
        query(database, "select movie_id, vote_count from {schema}.movies_clean where movie_id = any(%s)", (live,))
    )
    features = {
        row[0]: row[1:]
        for row in query(
            database,
            "select distinct on (movie_id) movie_id, log_vote_count, "
            + ", ".join(FEATURE_NAMES)
            + " from {schema}.features where movie_id = any(%s) order by movie_id, event_timestamp desc",
            (live,),
        )
    }
    scored = {
        m: n
        for m, n in query(
            database,
            "select movie_id, count(*) from {schema}.predictions where movie_id = any(%s) and scored_at > %s "
            "group by movie_id",
            (live, since),
        )
    }
    online = online_feature_rows(feast, live)
    behind: dict[str, list[int]] = {"movies_clean": [], "features": [], "online": [], "predictions": []}
    for movie_id in live:
        if clean.get(movie_id) != votes.get(movie_id):
            behind["movies_clean"].append(movie_id)
        row = features.get(movie_id)
        if row is None or not math.isclose(row[0], math.log1p(votes.get(movie_id, -1)), rel_tol=1e-9):
            behind["features"].append(movie_id)
        elif not all(
            same(online.loc[movie_id, name], value) for name, value in zip(FEATURE_NAMES, row[1:], strict=True)
        ):
            behind["online"].append(movie_id)
        if scored.get(movie_id) != 1:
            behind["predictions"].append(movie_id)
    deleted = touched["deleted"]
    for table in ("movies_raw", "movies_clean", "features", "predictions"):
        behind[f"{table} (deleted)"] = [
            r[0]
            for r in query(database, f"select movie_id from {{schema}}.{table} where movie_id = any(%s)", (deleted,))
        ]
    return {store: ids for store, ids in behind.items() if ids}


def test_the_daemon_brings_a_day_of_tmdb_changes_to_every_store_without_a_launch_by_hand(
    database, object_store, stack_env, instance_home, tracking, tmp_path
):
    movies = [m for month in MONTHS for m in movies_for_month(month)]
    with TmdbTestServer(FakeTmdb(movies)) as server:
        client = TmdbApiClient(base_url=server.base_url, api_key="test-key", requests_per_second=500)
        feast = own_feast_project(stack_env, object_store.storage_url)
        resources = {
            **platform_resources(database, object_store, client),
            "feast": feast,
            "mlflow_tracking": tracking,
        }
        instance = dg.DagsterInstance.from_config(str(instance_home))
        first_day(resources, instance)
        assert tracking.champion() is not None, "setup must leave a champion to score with"
        touched = a_day_of_changes(server.fake, stored_ids(database))
        server.fake.requests.clear()

        env = daemon_env(
            instance_home,
            database,
            object_store,
            server.base_url,
            MOVIE_REDIS_URL=stack_env["MOVIE_REDIS_URL"],
            MLFLOW_TRACKING_URI=tracking.tracking_uri,
            MOVIE_FEAST_PROJECT=feast.project,
            MOVIE_MLFLOW_EXPERIMENT=tracking.experiment,
            MOVIE_MODEL_NAME=tracking.registered_model,
            # every hop waits for one evaluation: 5 s instead of the default 30 s keeps the test short
            MOVIE_AUTOMATION_INTERVAL_SECONDS="5",
        )
        since = dt.datetime.now(dt.timezone.utc)
        log_file = tmp_path / "daemon.log"
        daemon = start_daemon(env, log_file)
        started = time.monotonic()
        behind: dict = {"everything": ["not checked yet"]}
        try:
            while time.monotonic() - started < DEADLINE_S:
                time.sleep(10)
                assert daemon.poll() is None, f"dagster-daemon exited:\n{tail(log_file, 40)}"
                failures = failed_runs(instance)
                assert not failures, "\n\n".join(failures)
                behind = lagging(database, feast, touched, since)
                if not behind:
                    break
            caught_up_s = time.monotonic() - started
        finally:
            stop_process_group(daemon, signal.SIGTERM)
        assert not behind, (
            f"after {DEADLINE_S}s not caught up: { {k: v[:5] for k, v in behind.items()} }\n{tail(log_file, 40)}"
        )
        print(f"caught up {caught_up_s:.0f}s after the daemon started")

        launched = [r.dagster_run for r in instance.get_run_records() if r.create_timestamp > since]
        by_hand = [
            r.run_id for r in launched if not (r.tags.get("dagster/sensor_name") or r.tags.get("dagster/backfill"))
        ]
        assert launched and not by_hand, "every run after setup comes from a sensor"
        assert server.fake.requests["discover"] == 0
        instance.dispose()
