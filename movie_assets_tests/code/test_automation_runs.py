"""The level-triggered conditions against real runs: in flight, racing a parent update, failing.

Runless reports (test_automation.py) cannot say when a run started or that it failed. Here the
platform's own conditions sit on a reduced graph with the platform's asset names, and
`dg.materialize` runs them on an ephemeral instance; a step can evaluate the automation
while its own run is in progress.
"""

import datetime as dt

import dagster as dg
import pytest

from movie_assets.automation.conditions import follows_parent_months
from movie_assets.automation.staleness import max_attempts
from movie_assets.partitions import release_month_partitions

MONTH = "2024-03-01"
during_clean: list = []  # callables a movies_clean step runs on the instance it runs in
during_raw: list = []  # callables a movies_raw step runs after reporting its month as stored, as a range crawl does
failures = {"left": 0}


@dg.asset(partitions_def=release_month_partitions)
def movies_raw(context: dg.AssetExecutionContext):
    if during_raw:
        yield dg.AssetMaterialization(context.asset_key, partition=context.partition_key)
        for hook in during_raw:
            hook(context.instance)
    yield dg.MaterializeResult()


@dg.asset(partitions_def=release_month_partitions, deps=[movies_raw], automation_condition=follows_parent_months())
def movies_clean(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for hook in during_clean:
        hook(context.instance)
    if failures["left"] > 0:
        failures["left"] -= 1
        raise RuntimeError("PostgreSQL refused the write (a test failure)")
    return dg.MaterializeResult()


@dg.asset(partitions_def=release_month_partitions, deps=[movies_clean], automation_condition=follows_parent_months())
def movie_features() -> dg.MaterializeResult:
    return dg.MaterializeResult()


@dg.asset
def feast_definitions() -> None: ...  # the unpartitioned names the conditions set apart


@dg.asset
def movie_rating_model() -> None: ...


graph = dg.Definitions(assets=[movies_raw, movies_clean, movie_features, feast_definitions, movie_rating_model])


def evaluate(instance: dg.DagsterInstance) -> dg.EvaluateAutomationConditionsResult:
    return dg.evaluate_automation_conditions(
        defs=graph, instance=instance, evaluation_time=dt.datetime.now(dt.timezone.utc)
    )


def asked(instance: dg.DagsterInstance, key: str = "movies_clean") -> set:
    return set(evaluate(instance).get_requested_partitions(dg.AssetKey(key)))


def run(instance: dg.DagsterInstance, key, month: str = MONTH) -> bool:
    return dg.materialize([key], partition_key=month, instance=instance, raise_on_error=False).success


@pytest.fixture(autouse=True)
def clean_hooks():
    during_clean.clear()
    during_raw.clear()
    failures["left"] = 0
    yield
    during_clean.clear()
    during_raw.clear()
    failures["left"] = 0


@pytest.fixture(params=["sqlite", "ephemeral"])
def instance(request):
    """Both comparisons: a run-sharded SQLite instance (stored values date from their run's plan) and one
    with global event ids, like PostgreSQL (they date from the start of the step that wrote them)."""
    with dg.instance_for_test() if request.param == "sqlite" else dg.DagsterInstance.ephemeral() as instance:
        run(instance, movies_raw)
        run(instance, movies_clean)
        run(instance, movie_features)
        assert asked(instance) == set()
        yield instance


def test_a_partition_in_flight_is_not_asked_for_again(instance):
    run(instance, movies_raw)
    assert asked(instance) == {MONTH}
    seen_while_running = []
    during_clean.append(lambda inst: seen_while_running.append(asked(inst)))
    assert run(instance, movies_clean)
    assert seen_while_running == [set()]
    assert asked(instance) == set()


def test_one_run_of_a_month_through_the_chain_leaves_every_step_current(instance):
    """Inputs a run materialized itself, before the step that reads them, are not news for that step."""
    chain = dg.materialize(
        [movies_raw, movies_clean, movie_features], partition_key=MONTH, instance=instance, raise_on_error=False
    )
    assert chain.success
    assert asked(instance) == set() and asked(instance, "movie_features") == set()


def test_a_parent_update_while_the_child_runs_is_not_lost(instance):
    """The sync lands after movies_clean's run started reading: its materialization is older than that input."""
    run(instance, movies_raw)
    during_clean.append(
        lambda inst: inst.report_runless_asset_event(dg.AssetMaterialization("movies_raw", partition=MONTH))
    )
    assert run(instance, movies_clean)
    during_clean.clear()
    assert asked(instance) == {MONTH}, "the second sync's rows would wait for the month's next change"
    assert run(instance, movies_clean)
    assert asked(instance) == set()


def test_a_month_a_range_crawl_reported_as_stored_runs_once(instance):
    """A range crawl reports each month when it is stored and again with the range's result at the end.

    The month runs from the first report while the crawl goes on; the restatement is not news.
    """
    seen_while_crawling = []

    def build_from_the_report(inst):
        seen_while_crawling.append(asked(inst))
        assert run(inst, movies_clean)

    during_raw.append(build_from_the_report)
    assert run(instance, movies_raw)
    assert seen_while_crawling == [{MONTH}], "a stored month waited for the whole range"
    assert asked(instance) == set(), "the range's result asked for the month again"


def test_a_sync_between_a_crawl_report_and_its_restatement_is_news(instance):
    def build_then_sync(inst):
        assert run(inst, movies_clean)
        inst.report_runless_asset_event(dg.AssetMaterialization("movies_raw", partition=MONTH))

    during_raw.append(build_then_sync)
    assert run(instance, movies_raw)
    assert asked(instance) == {MONTH}, "the sync's rows would wait for the month's next change"


def test_a_failed_retry_of_a_mid_run_update_is_asked_for_again(instance):
    """The input landed while the month's run read; the retry fails: the month is still behind that input.

    The newest plan is then the failed run's; the stored value is as old as the plan of the run that wrote it.
    """
    run(instance, movies_raw)
    during_clean.append(
        lambda inst: inst.report_runless_asset_event(dg.AssetMaterialization("movies_raw", partition=MONTH))
    )
    assert run(instance, movies_clean)
    during_clean.clear()
    assert asked(instance) == {MONTH}
    failures["left"] = 1
    assert not run(instance, movies_clean)
    assert asked(instance) == {MONTH}, "one failed retry left the month behind its input for good"


def test_a_failing_partition_is_retried_a_bounded_number_of_times_with_the_reason_shown(instance):
    limit = max_attempts()
    failures["left"] = 100
    run(instance, movies_raw)
    attempts = 0
    for _ in range(limit + 3):
        if asked(instance) != {MONTH}:
            break
        attempts += 1
        assert not run(instance, movies_clean)
    assert attempts == limit
    # The evaluation names why it stopped: the give-up node is true for that month.
    result = next(r for r in evaluate(instance).results if r.key == dg.AssetKey("movies_clean"))
    given_up = [
        node for node in walk(result) if node.condition.name.startswith("failed_") and node.true_subset.size == 1
    ]
    assert given_up, "no sub-condition explains why the month is no longer requested"
    # A new input (the fix landed upstream, or the next sync) asks again; a success ends it.
    failures["left"] = 0
    run(instance, movies_raw)
    assert asked(instance) == {MONTH}
    assert run(instance, movies_clean)
    assert asked(instance) == set()


def walk(result):
    yield result
    for child in result.child_results:
        yield from walk(child)
