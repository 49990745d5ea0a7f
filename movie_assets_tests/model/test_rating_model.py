"""The rating model on 24 sample months.

It beats the baseline, is fully tracked, and the champion moves only on improvement.
"""

import datetime as dt
import os
import uuid

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from movie_assets.assets.features import feast_definitions, movie_features, online_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.assets.training import TrainingConfig, movie_rating_model, movie_rating_predictions
from movie_assets.domain import clock
from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.jobs.sweep import movie_rating_sweep
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.tmdb_sample import TmdbSampleSource
from movie_assets_tests.conftest import movie_platform_cli, own_feast_project, platform_resources

SAMPLE_RANGE = {"dagster/asset_partition_range_start": "2023-01-01", "dagster/asset_partition_range_end": "2024-12-01"}
# The sample answers each day's documents (issue 29): the tests train on the catalogue as crawled on one
# fixed day, whatever day they run. The day before its feed starts (2025-01-01): the catalogue as released,
# on which the margins below were measured.
CRAWL_DAY = dt.datetime(2024, 12, 31, 12, tzinfo=dt.timezone.utc)
WORSE = TrainingConfig(n_estimators=2, max_depth=1, learning_rate=0.01)
# On the sample the ridge beats XGBoost on the default holdout (3 months, labels of >= 20 votes:
# about 0.657 against 0.671); XGBoost beats it by about 0.12 on a year's holdout with labels of >= 5 votes.
XGBOOST_WINS = TrainingConfig(min_votes=5, holdout_months=12)
ALL_ASSETS = [
    movies_raw,
    movies_clean,
    movie_features,
    feast_definitions,
    online_features,
    movie_rating_model,
    movie_rating_predictions,
]


@pytest.fixture(scope="module")
def pipeline(stack_env, tmp_path_factory):
    """24 sample months through features and online store, with the platform's default Feast project."""
    from movie_assets.resources.object_store import ObjectStore
    from movie_assets.resources.postgres import PostgresDatabase

    schema = f"test_model_{uuid.uuid4().hex[:6]}"
    database = PostgresDatabase(url=stack_env["MOVIE_DB_URL"], db_schema=schema)
    store = ObjectStore(storage_url=(tmp_path_factory.mktemp("model") / "objects").as_uri())
    # A Feast project of its own: the default one belongs to the demo's data (notebooks, CLI tests).
    feast = own_feast_project(stack_env, store.storage_url, prefix="tmodel_")
    resources = {
        **platform_resources(database, store, TmdbSampleSource()),
        "feast": feast,
        "mlflow_tracking": MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"]),
    }
    instance = dg.DagsterInstance.ephemeral()
    with clock.clock_at(CRAWL_DAY):
        dg.materialize([movies_raw], resources=resources, tags=SAMPLE_RANGE, instance=instance)
    dg.materialize(
        [movies_raw, movies_clean, movie_features],
        selection=[movies_clean, movie_features],
        resources=resources,
        tags=SAMPLE_RANGE,
        instance=instance,
    )
    dg.materialize([feast_definitions, online_features], resources=resources, instance=instance)
    yield {"resources": resources, "instance": instance, "database": database, "store": store}
    with database.connect() as conn:
        conn.execute(f'drop schema "{schema}" cascade')


def materialize_model(pipeline, tracking: MlflowTracking, config: TrainingConfig | None = None, **options):
    resources = {**pipeline["resources"], "mlflow_tracking": tracking}
    run_config = dg.RunConfig({"movie_rating_model": config}) if config else None
    return dg.materialize(
        ALL_ASSETS,
        selection=[movie_rating_model],
        resources=resources,
        instance=pipeline["instance"],
        run_config=run_config,
        **options,
    )


def train(pipeline, tracking: MlflowTracking, config: TrainingConfig | None = None):
    result = materialize_model(pipeline, tracking, config)
    return result.asset_materializations_for_node("movie_rating_model")[0].metadata, result


def fresh_tracking(stack_env) -> MlflowTracking:
    suffix = uuid.uuid4().hex[:8]
    return MlflowTracking(
        tracking_uri=stack_env["MLFLOW_TRACKING_URI"],
        experiment=f"test_{suffix}",
        registered_model=f"test_xgb_{suffix}",
    )


def test_model_beats_the_mean_baseline_and_is_fully_tracked(pipeline, stack_env):
    tracking = fresh_tracking(stack_env)
    metadata, result = train(pipeline, tracking)
    rmse, baseline = metadata["rmse"].value, metadata["baseline_rmse"].value
    assert rmse <= 0.85 * baseline, f"rmse {rmse} vs mean baseline {baseline}: not a clear margin"
    assert metadata["r2"].value > 0.25
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "beats_mean_baseline": True,
        "beats_linear_baseline": metadata["rmse"].value <= metadata["linear_rmse"].value,
    }

    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id])
    for metric in ("rmse", "mae", "r2", "baseline_rmse", "baseline_mae", "baseline_r2", "linear_rmse"):
        assert metric in run.data.metrics, metric
    for param in ("n_estimators", "max_depth", "learning_rate", "min_votes", "holdout_months", "train_rows"):
        assert param in run.data.params, param
    assert run.data.tags["feature_service"] == "movie_rating_v1"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.tags["partition_range"] == "2023-01..2024-12"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"feature_importance.png", "holdout_predictions.csv"} <= artifacts
    (version,) = client.search_model_versions(f"name = '{tracking.registered_model}'")
    assert version.run_id == run.info.run_id
    model_info = client.get_model_version(tracking.registered_model, version.version)
    import mlflow

    logged = mlflow.models.get_model_info(f"models:/{tracking.registered_model}/{model_info.version}")
    assert logged.signature is not None and set(logged.signature.inputs.input_names()) == set(FEATURE_NAMES)
    assert "vote_average" not in logged.signature.inputs.input_names(), "the target must not be a feature"
    # The UI's links land on this run and this version, in MLflow's classic ML view (not its GenAI home).
    ml_view = "?workflowType=machine_learning"
    assert metadata["mlflow_run"].value.endswith(f"/runs/{run.info.run_id}{ml_view}")
    assert metadata["mlflow_model_version"].value.endswith(
        f"/#/models/{tracking.registered_model}/versions/{version.version}{ml_view}"
    )


def test_champion_moves_only_on_improvement(pipeline, stack_env):
    tracking = fresh_tracking(stack_env)
    first, _ = train(pipeline, tracking)
    assert first["champion_decision"].value.startswith("promoted v1")
    worse, _ = train(pipeline, tracking, WORSE)
    assert worse["champion_decision"].value.startswith("kept champion v1"), worse["champion_decision"].value
    assert tracking.champion().version == "1"
    better, _ = train(pipeline, tracking)  # same config as v1: equal, not better -> still v1
    assert tracking.champion().version == "1" and better["model_version"].value == "3"


def test_beats_linear_baseline_warns_when_the_ridge_wins_and_passes_when_xgboost_wins(pipeline, stack_env):
    """The ridge is a diagnostic: when it wins, the check warns and the metadata says so, and the
    champion is still chosen among XGBoost versions (else the sample would have none)."""
    tracking = fresh_tracking(stack_env)
    for config, xgboost_wins in ((None, False), (XGBOOST_WINS, True)):
        metadata, result = train(pipeline, tracking, config)
        (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "beats_linear_baseline"]
        rmse, linear_rmse = metadata["rmse"].value, metadata["linear_rmse"].value
        assert (rmse <= linear_rmse) is xgboost_wins, (config, rmse, linear_rmse)
        assert check.passed is xgboost_wins and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["margin"].value == pytest.approx(linear_rmse - rmse, abs=1e-4)
        assert metadata["linear_baseline_beats_xgboost"].value is not xgboost_wins
        assert "registered XGBoost versions only" in metadata["champion_rule"].value
        if not xgboost_wins:
            assert "the ridge baseline beats XGBoost" in metadata["versus_linear_baseline"].value
            assert metadata["champion_decision"].value.startswith("promoted v1: first champion")
            assert tracking.champion().version == "1"


def test_predictions_use_the_champion(pipeline, stack_env):
    tracking = fresh_tracking(stack_env)
    train(pipeline, tracking)
    champion = tracking.champion().version
    result = dg.materialize(
        ALL_ASSETS,
        selection=[movie_rating_predictions],
        resources={**pipeline["resources"], "mlflow_tracking": tracking},
        instance=pipeline["instance"],
        tags={"dagster/asset_partition_range_start": "2024-10-01", "dagster/asset_partition_range_end": "2024-12-01"},
    )
    assert result.success
    database = pipeline["database"]
    with database.connect() as conn:
        rows = conn.execute(
            f'select movie_id, predicted_vote_average, model_version from "{database.db_schema}".predictions'
        ).fetchall()
    assert len(rows) > 200 and {r[2] for r in rows} == {champion}
    assert all(0 <= r[1] <= 10 for r in rows)


def test_predict_cli_uses_the_champion_and_online_features(demo_run, stack_env, test_stack):
    """After `make demo`: `movie-platform predict` = the champion model on the movie's online features."""
    assert demo_run.returncode == 0, demo_run.stderr[-2000:]
    env = {**os.environ, **stack_env, "MOVIE_PLATFORM_STATE_DIR": str(test_stack.state_dir)}
    from movie_assets.resources.serving import online_feature_rows
    from movie_assets.settings import Settings

    tracking = MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"])
    feast = FeastStore.from_settings(Settings.from_env(stack_env))
    online = online_feature_rows(feast, [290000001, 290000002, 290000003]).dropna(how="all")
    movie_id = int(online.index[0])
    expected = tracking.load_xgboost(tracking.champion().version).predict(
        online.loc[[movie_id], FEATURE_NAMES].astype("float64")
    )[0]
    predicted = movie_platform_cli("predict", str(movie_id), env=env)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert f"v{tracking.champion().version}" in predicted.stdout
    line = next(row for row in predicted.stdout.splitlines() if row.strip().startswith(str(movie_id)))
    assert float(line.split()[1]) == pytest.approx(expected, abs=0.005)


def test_sweep_logs_a_parent_with_one_child_per_configuration(pipeline, stack_env):
    tracking = fresh_tracking(stack_env)
    resources = {**pipeline["resources"], "mlflow_tracking": tracking}
    result = movie_rating_sweep.execute_in_process(
        resources=resources,
        instance=pipeline["instance"],
        run_config={
            "ops": {
                "sweep_movie_rating": {"config": {"max_depths": [2, 4], "learning_rates": [0.1], "n_estimators": 50}}
            }
        },
    )
    assert result.success
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].data.metrics["best_rmse"] == min(c.data.metrics["rmse"] for c in children)


def test_training_never_fails_only_because_time_passed(pipeline):
    """Two years on with no materialization in between, the training set is the same (was: no features at all)."""
    from movie_assets.domain.training import labelled_movies, training_set
    from movie_assets.feature_definitions import FEATURE_SERVICE

    database = pipeline["database"]
    with database.connect() as conn:
        clean = pd.DataFrame(
            conn.execute(
                f'select movie_id, release_month, vote_average, vote_count from "{database.db_schema}".movies_clean'
            ).fetchall(),
            columns=["movie_id", "release_month", "vote_average", "vote_count"],
        )
    labels = labelled_movies(clean, 20)
    store = pipeline["resources"]["feast"].store()
    now = clock.now()
    fresh = training_set(store, labels, FEATURE_SERVICE, now)
    assert len(fresh) == len(labels) and fresh[FEATURE_NAMES].notna().any(axis=1).all()
    later = now + dt.timedelta(days=730)
    with clock.clock_at(later):
        aged = training_set(store, labels, FEATURE_SERVICE, clock.now())
    pd.testing.assert_frame_equal(aged, fresh)


def test_no_secret_reaches_mlflow_params_tags_or_the_event_log(pipeline, stack_env, monkeypatch):
    """A training run with TMDB credentials in its environment: nothing of them in MLflow or Dagster's logs."""
    secrets = ("tmdb-key-in-env-5c1e", "tmdb-token-in-env-9b7d")
    monkeypatch.setenv("TMDB_API_KEY", secrets[0])
    monkeypatch.setenv("TMDB_READ_ACCESS_TOKEN", secrets[1])
    tracking = fresh_tracking(stack_env)
    _, result = train(pipeline, tracking)
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name(tracking.experiment).experiment_id])
    values = [str(v) for run in runs for v in (*run.data.params.values(), *run.data.tags.values())]
    assert runs and values
    assert not [v for v in values if any(s in v for s in secrets)]
    assert not [r for r in pipeline["instance"].all_logs(result.run_id) if any(s in str(r) for s in secrets)]


def test_a_training_step_that_fails_leaves_its_mlflow_run_failed_not_running(pipeline, stack_env, monkeypatch):
    """Why dagster-mlflow left the pins (issue 28): its `end_mlflow_on_run_finished` hook ends runs that its
    own `mlflow_tracking` resource starts. Ours starts in the step with `mlflow.start_run()`, whose context
    ends it FAILED on any error inside it; this shows that case."""
    from movie_assets.assets import training

    def broken(*args, **kwargs):
        raise RuntimeError("the registry went away while deciding the champion")

    monkeypatch.setattr(training, "choose_champion", broken)
    tracking = fresh_tracking(stack_env)
    assert not materialize_model(pipeline, tracking, raise_on_error=False).success
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(tracking.experiment).experiment_id])
    assert run.info.status == "FAILED" and run.info.end_time is not None, run.info
    assert tracking.champion() is None
