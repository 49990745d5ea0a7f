"""The platform converges under the real `dagster-daemon run`, from states an event-driven daemon never recovers.

Setup writes what a first day leaves behind (six crawled months, features online, a
champion model, predictions) into an instance of the test's own. Then TMDB has a day of
changes and a sync runs by hand, before any daemon (what `make demo` leaves for `make dev`).
More changes follow; the test starts the daemon (`tmdb_changes_sensor` syncs those), SIGKILLs
the daemon alone while the automation's runs are under way, and starts it again. Within 10
minutes every touched movie is current in movies_clean, features, the Feast online store
(equal to the newest offline row) and predictions, the deleted ones are gone, no run failed
but those that died with the killed daemon's code server, and no partition was requested twice for
one change (a new attempt after such a death is not a second request for the same change).
"""

import datetime as dt
import math
import os
import signal
import time

import dagster as dg
import pytest

from movie_assets.assets.features import feast_definitions, movie_features, online_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.assets.training import movie_rating_model, movie_rating_predictions
from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.jobs.sync_tmdb_changes import sync_tmdb_changes
from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, release_month_partitions
from movie_assets.resources.serving import online_feature_rows
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import movies_for_month
from movie_assets_tests.conftest import own_feast_project, own_tracking, platform_resources, stop_process_group
from movie_assets_tests.integration.dagster_instance import daemon_env, own_instance_home, start_daemon
from movie_assets_tests.integration.test_change_sync import (
    MONTHS,
    RANGE_TAGS,
    TODAY,
    a_day_of_changes,
    query,
    stored_ids,
)
from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer
from movie_platform.local_stack import tail

DEADLINE_S = 10 * 60
AUTOMATION = "default_automation_condition_sensor"


@pytest.fixture
def instance_home(stack_env, tmp_path):
    """A Dagster instance of the test's own (PostgreSQL storage, queued runs, pools), dropped afterwards."""
    with own_instance_home(stack_env["MOVIE_DB_URL"], tmp_path / "dagster_home", "dagster_daemon") as home:
        yield home


@pytest.fixture
def tracking(stack_env):
    with own_tracking(stack_env, "daemon") as tracking:
        yield tracking


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


def failed_runs(instance: dg.DagsterInstance, died_with: set[str] = frozenset()) -> list[str]:
    """Each failed run with its first step error (or its run failure): why the platform did not catch up.

    Runs in `died_with` are left out: they ran in the killed daemon's code server, which stops once the
    daemon's heartbeats do, and run monitoring failed them (no step failed); automation asks again.
    """
    out = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        if run.run_id in died_with:
            continue
        errors = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        error = errors[0].dagster_event.step_failure_data.error if errors else None
        while error is not None and error.cause is not None:  # the user's exception, not Dagster's wrapper
            error = error.cause
        if error is not None:
            text = f"{error.cls_name}: {error.message}\n{''.join(error.stack)[-1200:]}"
        else:
            ends = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            text = f"no step failed; run failure: {ends[-1].message if ends else 'none recorded'}"
        out.append(f"{run.job_name} {run.tags.get('dagster/partition', '')}: {text}")
    return out


def died_with_the_daemon(instance: dg.DagsterInstance, since: float, restarted: float) -> set[str]:
    """Automation runs created before the restart that failed with no step failing (their worker was gone)."""
    return {
        r.dagster_run.run_id
        for r in automation_runs(instance, since)
        if r.create_timestamp.timestamp() < restarted
        and r.dagster_run.status == dg.DagsterRunStatus.FAILURE
        and not instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    }


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


def automation_runs(instance: dg.DagsterInstance, since: float) -> list:
    """The run records the automation sensor launched (itself or through a backfill) after `since`."""
    return [
        r
        for r in instance.get_run_records()
        if r.create_timestamp.timestamp() > since
        and r.dagster_run.job_name != "sync_tmdb_changes"
        and (r.dagster_run.tags.get("dagster/sensor_name") == AUTOMATION or r.dagster_run.tags.get("dagster/backfill"))
    ]


def describe(records) -> str:
    return "\n".join(
        f"{r.dagster_run.run_id[:8]} {r.dagster_run.status.value} "
        f"{sorted(k.to_user_string() for k in r.dagster_run.asset_selection or [])} {partitions_of(r.dagster_run)}"
        for r in records
    )


def partitions_of(run: dg.DagsterRun) -> list:
    tags = run.tags
    if tags.get("dagster/partition"):
        return [tags["dagster/partition"]]
    if tags.get(RANGE_START_TAG):
        return release_month_partitions.get_partition_keys_in_range(
            dg.PartitionKeyRange(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
        )
    return [None]


def asked_twice_for_one_change(instance: dg.DagsterInstance, since: float) -> list[str]:
    """Each asset partition the automation ran again although none of its inputs was materialized in between.

    Between two runs of one partition, an input partition it reads (the same month, any month
    for an unpartitioned asset, or an unpartitioned input) must have landed after the first run
    started; otherwise the second run repeats the first for the same change.
    """
    from movie_assets.definitions import defs

    asset_graph = defs.resolve_asset_graph()
    landed: dict[dg.AssetKey, list[tuple[str | None, float]]] = {}

    def inputs_landed(key: dg.AssetKey) -> list[tuple[str | None, float]]:
        if key not in landed:
            records, cursor = [], None
            while True:  # Dagster returns at most 10,000 records a call
                page = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, after_timestamp=since), limit=10_000, cursor=cursor
                )
                records += page.records
                if not page.has_more:
                    break
                cursor = page.cursor
            landed[key] = [(r.partition_key, r.timestamp) for r in records]
        return landed[key]

    runs: dict[tuple[dg.AssetKey, str | None], list] = {}
    for record in sorted(automation_runs(instance, since), key=lambda r: r.create_timestamp):
        for key in record.dagster_run.asset_selection or []:
            for partition in partitions_of(record.dagster_run):
                runs.setdefault((key, partition), []).append(record)
    repeated = []
    for (key, partition), records in runs.items():
        node = asset_graph.get(key)
        for first, second in zip(records, records[1:], strict=False):
            if first.dagster_run.status == dg.DagsterRunStatus.FAILURE:
                continue  # asked again after a failed attempt (bounded by MOVIE_AUTOMATION_MAX_ATTEMPTS)
            started = (first.start_time or first.create_timestamp.timestamp()) - 1
            asked = second.create_timestamp.timestamp()
            newer = [
                when
                for parent in node.parent_entity_keys
                for parent_partition, when in inputs_landed(parent)
                if started < when < asked
                and (partition is None or parent_partition is None or parent_partition == partition)
            ]
            if not newer:
                repeated.append(
                    f"{key.to_user_string()} {partition}: runs {first.dagster_run.run_id[:8]}, "
                    f"{second.dagster_run.run_id[:8]}"
                )
    return repeated


def more_changes(fake: FakeTmdb, stored: list[int], touched: dict) -> None:
    """Vote changes on 40 movies the first batch did not touch, listed later the same day."""
    taken = {m for ids in touched.values() for m in ids}
    later = [m for m in stored if m not in taken][:40]
    for movie_id in later:
        truth = fake.truth(movie_id)
        fake.change(TODAY, movie_id, {**truth, "vote_count": int(truth["vote_count"]) + 500})
    touched["changed"] = touched["changed"] + later


def test_the_daemon_converges_after_a_sync_by_hand_and_a_daemon_killed_mid_propagation(
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
        since = time.time()
        stored = stored_ids(database)
        touched = a_day_of_changes(server.fake, stored)
        # The sync, by hand and before any daemon ran: `dagster job execute -j sync_tmdb_changes`, or make demo.
        assert sync_tmdb_changes.execute_in_process(resources=resources, instance=instance).success
        more_changes(server.fake, stored, touched)  # what the daemon's own sync will find
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
        scored_since = dt.datetime.now(dt.timezone.utc)
        log_file = tmp_path / "daemon.log"
        started = time.monotonic()
        killed = start_daemon(env, log_file)
        daemon = None
        behind: dict = {"everything": ["not checked yet"]}
        try:
            # Mid-propagation: the automation has launched runs. SIGKILL the daemon alone (an OOM kill). Its
            # code server stops once the heartbeats do, and a run still in it may die too: run monitoring
            # fails it and automation asks again. A new daemon takes over.
            while not automation_runs(instance, since):
                assert time.monotonic() - started < DEADLINE_S, f"no automation run launched:\n{tail(log_file, 40)}"
                assert killed.poll() is None, f"dagster-daemon exited:\n{tail(log_file, 40)}"
                time.sleep(1)
            os.kill(killed.pid, signal.SIGKILL)  # not reaped yet: its group id stays ours until teardown
            print(
                f"daemon SIGKILLed {time.monotonic() - started:.0f}s after start, "
                f"{len(automation_runs(instance, since))} automation run(s) launched"
            )
            restarted = time.time()
            daemon = start_daemon(env, log_file)
            while time.monotonic() - started < DEADLINE_S:
                time.sleep(10)
                assert daemon.poll() is None, f"dagster-daemon exited:\n{tail(log_file, 40)}"
                failures = failed_runs(instance, died_with_the_daemon(instance, since, restarted))
                assert not failures, "\n\n".join(failures)
                behind = lagging(database, feast, touched, scored_since)
                if not behind:
                    break
            caught_up_s = time.monotonic() - started
            # Converged: once the last runs (backups, EDA, the online store after the last month) end,
            # four more evaluations launch nothing.
            while any(not r.dagster_run.is_finished for r in automation_runs(instance, since)):
                assert time.monotonic() - started < DEADLINE_S + 120, describe(automation_runs(instance, since))
                time.sleep(2)
            settled = automation_runs(instance, since)
            time.sleep(25)
            after = automation_runs(instance, since)
            new = after[: len(after) - len(settled)]
            assert not new, "launched after converging:\n" + describe(new)
        finally:
            if daemon is not None:
                stop_process_group(daemon, signal.SIGTERM)
            try:
                os.killpg(killed.pid, signal.SIGKILL)  # the killed daemon's code server, if it is still there
            except ProcessLookupError:
                pass
            killed.wait()
        assert not behind, (
            f"after {DEADLINE_S}s not caught up: { {k: v[:5] for k, v in behind.items()} }\n{tail(log_file, 40)}"
        )
        print(f"caught up {caught_up_s:.0f}s after the daemon first started; automation runs:\n{describe(after)}")
        died = died_with_the_daemon(instance, since, restarted)
        assert not failed_runs(instance, died)
        print(f"{len(died)} run(s) died with the killed daemon's code server and were asked for again")
        repeated = asked_twice_for_one_change(instance, since)
        assert not repeated, "asked twice for one change:\n" + "\n".join(repeated)

        launched = [r.dagster_run for r in instance.get_run_records() if r.create_timestamp.timestamp() > since]
        by_hand = [
            r.run_id
            for r in launched
            if not (r.tags.get("dagster/sensor_name") or r.tags.get("dagster/backfill"))
            and r.job_name != "sync_tmdb_changes"
        ]
        assert launched and not by_hand, "every run after the sync by hand comes from a sensor"
        assert any(r.tags.get("dagster/sensor_name") == "tmdb_changes_sensor" for r in launched), "no sensor sync"
        assert server.fake.requests["discover"] == 0
        instance.dispose()
