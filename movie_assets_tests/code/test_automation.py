"""Automation evaluated on the partition states users are in: the 24 sample months materialized, then one updated.

Each test reports materializations to a real (ephemeral) instance and asks Dagster's own
evaluator which runs the automation sensor would launch, exactly. The module runs twice:
with the sample's 24 months (24 of 24 filled), and in a subprocess with the API's months
since 1990 (24 of 444 filled), since the partitions are fixed when the code is imported.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from types import SimpleNamespace

import dagster as dg
import pytest

from movie_assets.automation.conditions import automation_sensor
from movie_assets.dagster_private import AssetCheckEvaluationTargetMaterializationData
from movie_assets.definitions import defs
from movie_assets.domain import clock
from movie_assets.partitions import release_month_partitions
from movie_assets.resources.tmdb_sample import sample_months
from movie_assets.settings import Settings

MONTHS = [m.isoformat() for m in sample_months()]  # 2023-01-01 .. 2024-12-01
MONTHLY = ["movies_raw", "movies_raw_backup", "movies_clean", "eda_stats", "movie_features", "movie_rating_predictions"]
SINGLE = ["feast_definitions", "online_features", "movie_rating_model"]
# The order a first day materializes them in: each after its inputs.
FIRST_DAY = [*MONTHLY[:-1], *SINGLE, MONTHLY[-1]]
# Evaluations happen after the reports they read: the level-triggered cron compares stored times with ticks.
NOW = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def report(instance: dg.DagsterInstance, key: str, partitions: list[str] | None = None) -> None:
    """A materialization as a run of the current code leaves it (with the asset's code version)."""
    version = defs.resolve_asset_graph().get(dg.AssetKey(key)).code_version
    tags = {"dagster/code_version": version} if version else None
    for partition in partitions or [None]:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition, tags=tags))


def requested(result) -> dict[str, set]:
    return {
        key.to_user_string(): result.get_requested_partitions(key)
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        if result.get_num_requested(key)
    }


@pytest.fixture
def settled():
    """The state after `make demo`: every asset materialized on the 24 sample months, one tick already evaluated."""
    instance = dg.DagsterInstance.ephemeral()
    for key in FIRST_DAY:
        report(instance, key, MONTHS if key in MONTHLY else None)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=NOW)
    # Nothing happened since the data landed, so the next tick must ask for nothing.
    quiet = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=first.cursor, evaluation_time=NOW + dt.timedelta(minutes=1)
    )
    assert requested(quiet) == {}
    return instance, quiet.cursor


def tick(instance, cursor, minutes: int = 2):
    return dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor, evaluation_time=NOW + dt.timedelta(minutes=minutes)
    )


def test_the_partitions_are_the_sample_months_or_mostly_empty():
    keys = release_month_partitions.get_partition_keys(current_time=NOW)
    if Settings.from_env().tmdb_source == "sample":
        assert keys == MONTHS
    else:
        assert keys[0] == "1990-01-01" and len(keys) >= 444


def test_this_module_holds_with_the_api_months_too():
    """The same tests in a process whose partitions are the API's: 24 of 444 months filled."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TMDB_", "MOVIE_PARTITION_START"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"]
        + ["-k", "not test_this_module_holds_with_the_api_months_too", "--timeout=300"],
        env={**env, "TMDB_API_KEY": "automation-test"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def run_requested(instance: dg.DagsterInstance, result) -> None:
    """What the daemon's runs would leave: each requested partition materialized, inputs first."""
    asked = requested(result)
    for key in FIRST_DAY:
        if key in asked:
            report(instance, key, sorted(asked[key]) if key in MONTHLY else None)


def converge(instance: dg.DagsterInstance, cursor, minutes: int = 2, most_ticks: int = 10) -> tuple[list[dict], object]:
    """Tick and run what each tick asks for until a tick asks for nothing: the requests of each tick, in order."""
    ticks = []
    for number in range(most_ticks):
        result = tick(instance, cursor, minutes=minutes + number)
        cursor = result.cursor
        if not requested(result):
            return ticks, cursor
        ticks.append(requested(result))
        run_requested(instance, result)
    raise AssertionError(f"still requesting after {most_ticks} ticks: {ticks[-3:]}")


def asked_per_partition(ticks: list[dict]) -> dict[tuple[str, object], int]:
    counts: dict[tuple[str, object], int] = {}
    for asked in ticks:
        for key, partitions in asked.items():
            for partition in partitions:
                counts[(key, partition)] = counts.get((key, partition), 0) + 1
    return counts


def test_one_updated_raw_month_reruns_that_month_downstream_and_nothing_else(settled):
    instance, cursor = settled
    report(instance, "movies_raw", ["2024-03-01"])
    result = tick(instance, cursor)
    # One run for the month: Dagster puts a month's requests of one tick in one run, inputs first.
    assert requested(result) == {
        "movies_raw_backup": {"2024-03-01"},
        "movies_clean": {"2024-03-01"},
        "eda_stats": {"2024-03-01"},
        "movie_features": {"2024-03-01"},
        "movie_rating_predictions": {"2024-03-01"},
    }
    run_requested(instance, result)
    ticks, _ = converge(instance, result.cursor, minutes=3)
    # Then the new feature rows go online; then nothing.
    assert ticks == [{"online_features": {None}}]


def test_changes_before_the_first_tick_are_requested_on_the_first_tick():
    """A sync run by hand before the daemon ever ran (make demo, then make dev): the first tick asks for it.

    An edge-triggered condition (reset by initial_evaluation) forgets every update older than its first tick.
    """
    instance = dg.DagsterInstance.ephemeral()
    for key in FIRST_DAY:
        report(instance, key, MONTHS if key in MONTHLY else None)
    report(instance, "movies_raw", ["2023-05-01", "2024-03-01"])  # the sync, before any evaluation
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=NOW)
    assert requested(first)["movies_clean"] == {"2023-05-01", "2024-03-01"}
    run_requested(instance, first)
    ticks, _ = converge(instance, first.cursor)
    assert requested(first)["movie_rating_predictions"] == {"2023-05-01", "2024-03-01"}
    assert ticks == [{"online_features": {None}}]


def test_a_daemon_down_for_hours_catches_up_once_and_runs_by_hand_count(settled):
    """Many syncs while no tick ran, one month re-run by hand meanwhile: every stale partition once, then quiet."""
    instance, cursor = settled
    for month in ("2023-02-01", "2023-09-01", "2024-03-01"):
        report(instance, "movies_raw", [month])
        report(instance, "movies_raw", [month])  # hourly syncs, all missed
    for key in FIRST_DAY[1:5]:  # someone materialized 2023-09 below movies_raw from the UI
        report(instance, key, ["2023-09-01"])
    later = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor, evaluation_time=NOW + dt.timedelta(hours=6)
    )
    assert requested(later)["movies_clean"] == {"2023-02-01", "2024-03-01"}
    run_requested(instance, later)
    ticks, _ = converge(instance, later.cursor, minutes=6 * 60 + 1)
    counts = asked_per_partition([requested(later), *ticks])
    assert max(counts.values()) == 1, "a partition was asked for twice for one change"
    assert counts[("movie_rating_predictions", "2023-09-01")] == 1  # the hand run's features, scored


def test_months_built_with_another_feature_set_are_rebuilt(settled):
    """An upgrade that changes the features: the months whose Parquet lacks them are rebuilt, then go online."""
    instance, cursor = settled
    for month in ("2023-04-01", "2024-08-01"):  # written by the code before the upgrade
        instance.report_runless_asset_event(
            dg.AssetMaterialization("movie_features", partition=month, tags={"dagster/code_version": "before"})
        )
    result = tick(instance, cursor)
    assert requested(result)["movie_features"] == {"2023-04-01", "2024-08-01"}, requested(result)
    run_requested(instance, result)
    ticks, _ = converge(instance, result.cursor, minutes=3)
    assert ticks == [{"online_features": {None}}], requested(result)


def test_a_converged_platform_asks_for_nothing_tick_after_tick(settled):
    instance, cursor = settled
    for minutes in range(2, 8):
        result = tick(instance, cursor, minutes=minutes)
        assert requested(result) == {}
        cursor = result.cursor


def test_an_old_month_follows_too(settled):
    """A change sync touches 2023 movies: not only the latest month reacts (eager() would ignore it)."""
    instance, cursor = settled
    report(instance, "movies_raw", ["2023-01-01"])
    assert requested(tick(instance, cursor))["movies_clean"] == {"2023-01-01"}


@dg.op(config_schema={"key": str, "check": str, "month": str, "passed": bool})
def log_check(context) -> None:
    """What the sync does after a month's materialization: the check's evaluation against it, in its own run."""
    config = SimpleNamespace(**context.op_config)
    asset = dg.AssetKey(config.key)
    (record,) = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[config.month]), limit=1
    ).records
    blocking = defs.resolve_asset_graph().get(dg.AssetCheckKey(asset, config.check)).blocking
    evaluation = dg.AssetCheckEvaluation(
        asset_key=asset,
        check_name=config.check,
        passed=config.passed,
        blocking=blocking,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        partition=config.month,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
        ),
    )
    context.log_event(evaluation)  # type: ignore[arg-type]


@dg.job
def check_job():
    log_check()


def check_month(instance: dg.DagsterInstance, check: str, month: str, passed: bool, key: str = "movies_raw") -> None:
    """A storage check's evaluation of a month against its newest materialization, logged by a run as the sync
    logs it (runless reports of one check and month collide in Dagster's unique index after the first)."""
    config = {"key": key, "check": check, "month": month, "passed": passed}
    check_job.execute_in_process(instance=instance, run_config={"ops": {"log_check": {"config": config}}})


def true_for(result, key: str, label: str) -> set:
    """The partitions of `key` for which the sub-condition named `label` was true (what the Automation page shows)."""

    def walk(node):
        yield node
        for child in node.child_results:
            yield from walk(child)

    (top,) = [r for r in result.results if r.key == dg.AssetKey(key)]
    found: set = set()
    for node in walk(top):
        if label in (node.condition.name, node.condition.get_label()):
            found |= set(node.true_subset.expensively_compute_partition_keys())
    return found


RAW_BLOCKING = ["unique_movie_ids", "release_dates_inside_partition", "ids_and_titles_present"]


def test_a_raw_month_failing_a_blocking_check_is_held_until_checked_again(settled):
    """A sync wrote two months; one fails ids_and_titles_present: only the other goes down, and the page says why."""
    instance, cursor = settled
    report(instance, "movies_raw", ["2023-05-01", "2024-03-01"])
    for month in ("2023-05-01", "2024-03-01"):
        for check in RAW_BLOCKING:
            check_month(
                instance, check, month, passed=not (month == "2023-05-01" and check == "ids_and_titles_present")
            )
    result = tick(instance, cursor)
    asked = requested(result)
    assert asked["movies_clean"] == {"2024-03-01"} and asked["movies_raw_backup"] == {"2024-03-01"}, asked
    assert not any("2023-05-01" in partitions for partitions in asked.values()), asked
    assert true_for(result, "movies_clean", "input_blocking_check_failed") == {"2023-05-01"}
    run_requested(instance, result)
    later = tick(instance, result.cursor, minutes=3)
    assert "2023-05-01" not in requested(later).get("movies_clean", set()), "a failed month went down on a later tick"
    check_month(instance, "ids_and_titles_present", "2023-05-01", passed=True)  # rerun from the Checks tab
    assert requested(tick(instance, later.cursor, minutes=4))["movies_clean"] == {"2023-05-01"}


def test_a_newer_materialization_of_a_held_month_lifts_the_hold(settled):
    """The check failed on the month's value then; a re-crawl stored a new one, not yet checked as failing."""
    instance, cursor = settled
    report(instance, "movies_raw", ["2024-03-01"])
    check_month(instance, "unique_movie_ids", "2024-03-01", passed=False)
    held = tick(instance, cursor)
    assert "movies_clean" not in requested(held)
    report(instance, "movies_raw", ["2024-03-01"])
    assert requested(tick(instance, held.cursor, minutes=3))["movies_clean"] == {"2024-03-01"}


def test_a_failed_warn_check_does_not_hold_a_month(settled):
    instance, cursor = settled
    report(instance, "movies_raw", ["2024-03-01"])
    check_month(instance, "source_verified_recently", "2024-03-01", passed=False)
    assert requested(tick(instance, cursor))["movies_clean"] == {"2024-03-01"}


def test_online_features_wait_for_a_held_feature_month(settled):
    """New feature rows of a month that failed features_match_clean are not put online; the month's scores wait."""
    instance, cursor = settled
    report(instance, "movie_features", ["2024-05-01"])
    check_month(instance, "features_match_clean", "2024-05-01", passed=False, key="movie_features")
    assert requested(tick(instance, cursor)) == {}


def test_new_feature_rows_refresh_the_online_store_and_that_months_scores(settled):
    instance, cursor = settled
    report(instance, "movie_features", ["2024-05-01"])
    assert requested(tick(instance, cursor)) == {"online_features": {None}, "movie_rating_predictions": {"2024-05-01"}}


def test_online_features_wait_for_feature_rows_that_are_only_requested(settled):
    """A raw update requests movie_features; online_features waits until those rows exist."""
    instance, cursor = settled
    report(instance, "movies_raw", ["2024-06-01"])
    assert "online_features" not in requested(tick(instance, cursor))


def test_a_new_model_rescores_the_months_that_have_movies_only(settled):
    instance, cursor = settled
    report(instance, "movie_rating_model")
    assert requested(tick(instance, cursor)) == {"movie_rating_predictions": set(MONTHS)}


def test_a_new_deployment_applies_feast_then_fills_the_online_store():
    """Empty instance, first feature months land: feast apply first, online_features once it exists."""
    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=NOW)
    assert requested(first) == {}
    report(instance, "movies_raw", MONTHS[:2])
    report(instance, "movies_clean", MONTHS[:2])
    report(instance, "movie_features", MONTHS[:2])
    landed = tick(instance, first.cursor)
    assert "feast_definitions" in requested(landed) and "online_features" not in requested(landed)
    report(instance, "feast_definitions")
    assert requested(tick(instance, landed.cursor, minutes=3)).get("online_features") == {None}


def test_the_model_retrains_on_its_weekly_cron(settled):
    instance, cursor = settled
    days_to_monday = 7 - NOW.weekday()  # the Monday after this week's
    monday = (NOW + dt.timedelta(days=days_to_monday)).replace(hour=4, minute=1)
    before = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor, evaluation_time=monday - dt.timedelta(minutes=2)
    )
    assert requested(before) == {}
    after = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=before.cursor, evaluation_time=monday
    )
    assert requested(after) == {"movie_rating_model": {None}}


def test_the_training_cron_compares_the_platform_clock_not_the_event_time(settled):
    """A simulated year moves the evaluation time; Dagster stamps events with the wall clock.

    A model the platform's clock built after the tick is current; the wall-clock time of its event,
    long before that simulated tick, must not make it due again (it did, every day after the first week).
    """
    instance, cursor = settled
    monday = (NOW + dt.timedelta(days=7 * 52 - NOW.weekday())).replace(hour=4, minute=1)
    built = dg.AssetMaterialization("movie_rating_model", metadata={clock.BUILT_AT: dg.MetadataValue.timestamp(monday)})
    instance.report_runless_asset_event(built)
    later = monday + dt.timedelta(hours=1)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor, evaluation_time=later)
    assert "movie_rating_model" not in requested(result)  # the months are scored by the new model, nothing more
    next_week = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=result.cursor, evaluation_time=later + dt.timedelta(days=7)
    )
    assert requested(next_week) == {"movie_rating_model": {None}}


def test_scores_wait_for_a_model_requested_on_the_same_tick(settled):
    """New feature rows and the training cron on one tick: the month is scored once, by the new model.

    Dagster's will_be_requested only sees inputs that could share the run, and a model cannot share a
    month's run: scoring now would use the old champion, and the new one would score the month again.
    """
    instance, cursor = settled
    report(instance, "movie_features", ["2024-05-01"])
    days_to_monday = 7 - NOW.weekday()
    monday = (NOW + dt.timedelta(days=days_to_monday)).replace(hour=4, minute=1)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor, evaluation_time=monday)
    assert requested(result) == {"movie_rating_model": {None}, "online_features": {None}}
    # Once the model has landed, every month is scored by it (see test_a_new_model_rescores_the_months...).


def test_changed_feast_definitions_are_applied_again(settled):
    instance, cursor = settled
    assert requested(tick(instance, cursor)) == {}

    def new_version(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(code_version="a-new-feature") if spec.key.path == ["feast_definitions"] else spec

    changed = dg.Definitions(
        assets=dg.map_asset_specs(new_version, defs.assets or []),
        sensors=defs.sensors,
        jobs=defs.jobs,
        resources=defs.resources,
    )
    result = dg.evaluate_automation_conditions(
        defs=changed, instance=instance, cursor=cursor, evaluation_time=NOW + dt.timedelta(minutes=3)
    )
    assert requested(result)["feast_definitions"] == {None}


def test_the_automation_sensor_runs_by_default_and_can_be_shipped_off():
    sensor = defs.resolve_sensor_def("default_automation_condition_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert automation_sensor({"MOVIE_AUTOMATION": "off"}).default_status == dg.DefaultSensorStatus.STOPPED


def test_the_automation_interval_follows_its_variable_and_refuses_nonsense():
    assert defs.resolve_sensor_def("default_automation_condition_sensor").minimum_interval_seconds == 30
    assert automation_sensor({"MOVIE_AUTOMATION_INTERVAL_SECONDS": "5"}).minimum_interval_seconds == 5
    for bad in ("0", "-3", "soon"):
        with pytest.raises(ValueError, match="MOVIE_AUTOMATION_INTERVAL_SECONDS"):
            automation_sensor({"MOVIE_AUTOMATION_INTERVAL_SECONDS": bad})


@pytest.mark.parametrize(
    "age,passed,state",
    [
        (dt.timedelta(hours=1), True, "PASS"),
        (dt.timedelta(hours=20), True, "WARN"),
        (dt.timedelta(hours=30), False, "FAIL"),
    ],
)
def test_online_store_freshness_check_fails_past_its_policy(age, passed, state):
    from movie_assets.automation.freshness import online_store_age

    result = online_store_age(NOW - age, NOW)
    assert result.passed is passed and result.metadata["state"].value == state


def test_online_store_freshness_check_fails_when_never_materialized():
    from movie_assets.automation.freshness import online_store_age

    assert online_store_age(None, NOW).passed is False


def test_current_months_freshness_fails_for_a_stale_or_never_crawled_current_month():
    from movie_assets.automation.freshness import current_months_age

    fresh = current_months_age({"2026-11-01": NOW - dt.timedelta(hours=2), "2026-12-01": NOW}, NOW)
    assert fresh.passed and fresh.metadata["stale_months"].value == "none"
    stale = current_months_age({"2026-11-01": NOW - dt.timedelta(hours=30), "2026-12-01": None}, NOW)
    assert not stale.passed and stale.metadata["stale_months"].value == "2026-11-01, 2026-12-01"
    assert stale.metadata["age_hours 2026-12-01"].value == "never"


def test_current_months_check_reads_the_months_own_materializations():
    """A sync of an old month does not make the current months fresh; a crawl of them does."""
    from movie_assets.automation.freshness import current_months_fresh

    current = release_month_partitions.get_partition_keys()[-2:]
    with dg.instance_for_test() as instance:
        report(instance, "movies_raw", [MONTHS[0]])  # an old month, under either source
        check = defs.get_asset_checks_def(dg.AssetCheckKey(dg.AssetKey("movies_raw"), "current_months_fresh"))
        assert check is not None
        context = dg.build_asset_check_context(instance=instance)
        assert current_months_fresh(context).passed is False
        report(instance, "movies_raw", current)
        assert current_months_fresh(context).passed is True


def test_assets_the_airflow_dag_runs_get_no_condition_when_the_bridge_is_on():
    from movie_assets.airflow_bridge import scheduled_by_airflow
    from movie_assets.assets import features, ingest, prepare, training
    from movie_assets.automation.policies import with_policies

    owned = scheduled_by_airflow({"AIRFLOW_URL": "http://airflow:8080"})
    assert owned == {"movies_raw", "movies_raw_backup", "movies_clean", "eda_stats", "movie_features"}
    assert scheduled_by_airflow({}) == set()
    bridged = with_policies(dg.load_assets_from_modules([ingest, prepare, features, training]), owned)
    conditioned = {spec.key.to_user_string() for asset in bridged for spec in asset.specs if spec.automation_condition}
    assert conditioned == {"feast_definitions", "online_features", "movie_rating_model", "movie_rating_predictions"}
