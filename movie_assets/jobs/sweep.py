"""A small hyperparameter sweep: one MLflow parent run, one child run per configuration."""

import itertools

import dagster as dg
from pydantic import Field

from movie_assets.domain import clock
from movie_assets.domain.cleaning import CLEAN_COLUMNS
from movie_assets.domain.training import (
    TARGET,
    features_of,
    labelled_movies,
    metrics,
    split_by_time,
    train_xgboost,
    training_set,
)
from movie_assets.feature_definitions import FEATURE_SERVICE
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.postgres import PostgresDatabase


class SweepConfig(dg.Config):
    max_depths: list[int] = Field(default=[3, 5])
    learning_rates: list[float] = Field(default=[0.05, 0.1])
    n_estimators: int = 200
    min_votes: int = 20
    holdout_months: int = 3


@dg.op(description="Trains every (max_depth, learning_rate) pair on the same split; compare the child runs in MLflow.")
def sweep_movie_rating(
    context: dg.OpExecutionContext,
    config: SweepConfig,
    database: PostgresDatabase,
    feast: FeastStore,
    mlflow_tracking: MlflowTracking,
) -> None:
    import mlflow  # here, not at the top: the code location imports this module on every load

    clean = database.read_rows("movies_clean", CLEAN_COLUMNS)
    as_of = clock.now()
    data = training_set(feast.store(), labelled_movies(clean, config.min_votes), FEATURE_SERVICE, as_of)
    split = split_by_time(data, config.holdout_months)
    mlflow_tracking.activate()
    results = []
    with mlflow.start_run(run_name=f"sweep-{context.run.run_id[:8]}") as parent:
        mlflow.set_tags({"dagster_run_id": context.run.run_id, "feature_service": FEATURE_SERVICE, "sweep": "true"})
        for depth, rate in itertools.product(config.max_depths, config.learning_rates):
            params = {"max_depth": depth, "learning_rate": rate, "n_estimators": config.n_estimators, "random_state": 7}
            with mlflow.start_run(run_name=f"depth{depth}-lr{rate}", nested=True):
                model = train_xgboost(split.train, params)
                scores = metrics(split.holdout[TARGET], model.predict(features_of(split.holdout)))
                mlflow.log_params(params)
                mlflow.log_metrics(scores)
            results.append((scores["rmse"], params))
            context.log.info(f"max_depth={depth} learning_rate={rate}: rmse {scores['rmse']:.4f}")
        best_rmse, best = min(results, key=lambda r: r[0])
        mlflow.log_metric("best_rmse", best_rmse)
        mlflow.log_params({f"best_{k}": v for k, v in best.items()})
    context.log_event(
        dg.AssetObservation(
            asset_key="movie_rating_model",
            metadata={
                "sweep_parent_run": parent.info.run_id,
                "configurations": len(results),
                "best_rmse": round(best_rmse, 4),
            },
        )
    )


@dg.job(
    description="Hyperparameter sweep of the rating model: one MLflow parent run with a child run per configuration."
)
def movie_rating_sweep():
    sweep_movie_rating()
