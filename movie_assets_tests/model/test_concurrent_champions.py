"""Two `movie_rating_model` runs deciding the champion at once, on the test stack's MLflow and PostgreSQL.

No training here: the versions are real registered versions of a model of the test's own, and each
deciding run's "score the champion on my holdout" step is a lookup that takes a while, the window in
which the other run used to slip in.
"""

import re
import threading
import time
import uuid

import pytest

from movie_assets.assets.training import decide_champion
from movie_assets.resources.mlflow import MlflowTracking

# The score each version gets on any holdout: v1 the old champion, v2 the better and v3 the worse newcomer.
RMSE = {"1": 0.9, "2": 0.5, "3": 0.7}
BASELINE = 1.0  # the mean baseline's RMSE: every version above beats it by more than 5%


@pytest.fixture
def tracking(stack_env):
    """Registered model `test_race_<id>` with versions 1..3 (each from an MLflow run of its own), champion v1."""
    name = f"test_race_{uuid.uuid4().hex[:8]}"
    tracking = MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"], experiment=name, registered_model=name)
    client = tracking.client()
    experiment = client.create_experiment(name)
    client.create_registered_model(name)
    for _ in RMSE:
        run = client.create_run(experiment, tags={"holdout_months": "2024-10,2024-11,2024-12"})
        client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    tracking.promote("1")
    yield tracking
    client.delete_registered_model(name)
    client.delete_experiment(experiment)


def race(tracking, database, contenders: dict[str, float]) -> dict[str, str]:
    """Each version decides in a thread of its own, all starting together; scoring the champion takes `pause` s."""
    start = threading.Barrier(len(contenders))
    decisions: dict[str, str] = {}
    errors: list[BaseException] = []

    def decide(version: str, pause: float) -> None:
        def champion_score(current) -> tuple[float, str]:
            time.sleep(pause)  # loading the champion and predicting the holdout
            return RMSE[current.version], ""

        try:
            start.wait(timeout=30)
            decisions[version], _ = decide_champion(
                tracking, database, version, RMSE[version], BASELINE, champion_score
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=decide, args=item) for item in contenders.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return decisions


@pytest.mark.parametrize("slower", ["worse", "better"])
def test_two_runs_deciding_at_once_leave_the_better_model_champion(tracking, database, slower):
    # Unserialized, both compare with v1 and the slower one's write is the last word: with the worse
    # one slower, v3 ends as champion; with the better one slower, v2 ends there by luck, over v1 twice.
    pauses = {"2": 0.2, "3": 1.5} if slower == "worse" else {"2": 1.5, "3": 0.2}
    decisions = race(tracking, database, pauses)
    assert tracking.champion().version == "2", f"v{tracking.champion().version} is champion: {decisions}"
    compared_with = sorted(re.search(r"champion v(\d+)", d).group(1) for d in decisions.values())
    # One decided against v1; the other waited and decided against the first one's outcome.
    assert compared_with[0] == "1" and compared_with[1] in ("2", "3"), decisions


def test_a_decision_stuck_behind_another_run_fails_naming_the_model_and_what_to_do(
    tracking, database, stack_env, monkeypatch
):
    import dagster as dg
    import psycopg

    from movie_assets.resources import mlflow as mlflow_resource

    monkeypatch.setattr(mlflow_resource, "CHAMPION_LOCK_TIMEOUT_S", 1)
    with psycopg.connect(stack_env["MOVIE_DB_URL"]) as other_run:  # another run, deciding forever
        other_run.execute(
            "select pg_advisory_xact_lock(hashtext(%s))", (f"mlflow champion {tracking.registered_model}",)
        )
        with pytest.raises(dg.Failure) as error:
            decide_champion(tracking, database, "2", RMSE["2"], BASELINE, lambda current: (RMSE[current.version], ""))
    message = str(error.value)
    assert tracking.registered_model in message and "cancel it" in message, message
    assert tracking.champion().version == "1", "no decision without the lock"


def test_no_version_becomes_champion_without_beating_the_mean_baseline_the_first_included(tracking, database):
    """Once the first version was promoted unconditionally: a model worse than the mean could be served."""
    tracking.client().delete_registered_model_alias(tracking.registered_model, "champion")

    def score(current) -> tuple[float, str]:
        return RMSE[current.version], ""

    decision, _ = decide_champion(tracking, database, "3", 0.7, 0.72, score)  # 0.7 > 0.95 x 0.72
    assert tracking.champion() is None, decision
    assert decision.startswith("no champion: new v3 is not 5% better than predicting the mean"), decision
    assert "rule: beats_mean_baseline" in decision
    decision, _ = decide_champion(tracking, database, "2", 0.5, 0.72, score)
    assert tracking.champion().version == "2" and decision.startswith("promoted v2: first champion"), decision
    # Better than the champion, but not 5% better than the mean on its own holdout: the champion stays.
    decision, _ = decide_champion(tracking, database, "1", 0.45, 0.46, score)
    assert tracking.champion().version == "2" and decision.startswith("kept champion v2: new v1 is not"), decision
