"""MLflow tracking and registry against MLFLOW_TRACKING_URI (artifacts are served by the tracking server)."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from movie_assets.settings import redact_url

if TYPE_CHECKING:
    from movie_assets.resources.postgres import PostgresDatabase

CHAMPION = "champion"
# MLflow 3 shows an experiment either as a GenAI app (traces) or as classic ML (runs table). The tag
# records which one ours is; the 3.17 UI itself follows its global workflow switch, which the
# `workflowType` query parameter of our links sets.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML = "custom_model_development"
ML_VIEW = "workflowType=machine_learning"
# How long a run waits for another run's champion decision (a model load and one holdout prediction).
CHAMPION_LOCK_TIMEOUT_S = 600


@functools.lru_cache(maxsize=4)
def _download_xgboost(tracking_uri: str, name: str, version: str, created: int):
    """The model of `name` version `version` (downloaded to a temp dir that is removed after); read-only."""
    import mlflow

    del created  # part of the cache key only
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        return mlflow.xgboost.load_model(f"models:/{name}/{version}", dst_path=folder)


class MlflowTracking(dg.ConfigurableResource):
    """Experiment and registered model of the rating model; the `champion` alias marks the serving version."""

    tracking_uri: str
    experiment: str = Field(default="movie_rating")
    registered_model: str = Field(default="movie_rating_xgb")

    @classmethod
    def from_settings(cls, settings) -> MlflowTracking:
        """The server, experiment and model a `Settings` names (CLI, notebooks)."""
        if not settings.mlflow_tracking_uri:
            raise ValueError("MLFLOW_TRACKING_URI is not set: run `movie-platform up` or set it")
        return cls(
            tracking_uri=settings.mlflow_tracking_uri,
            experiment=settings.mlflow_experiment,
            registered_model=settings.model_name,
        )

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def activate(self) -> None:
        """Point the fluent mlflow API (start_run, log_*) at this server and experiment."""
        import mlflow

        self.ensure_experiment()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)

    def ensure_experiment(self) -> None:
        """Create the experiment as a classic ML one, or tag an existing untagged one (an older platform's)."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                client.create_experiment(self.experiment, tags={EXPERIMENT_KIND_TAG: CLASSIC_ML})
                return
            except MlflowException as exc:  # another run created it first
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None and experiment.lifecycle_stage == "active":
            if EXPERIMENT_KIND_TAG not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_ML)

    def champion(self):
        """The ModelVersion behind the `champion` alias, or None before the first one."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(self.registered_model, CHAMPION)
        except MlflowException:
            return None

    def load_xgboost(self, version: str):
        """The XGBoost model of a registered version, downloaded once per process.

        A version's model never changes, so it is kept (the newest few) keyed by the version's creation
        time as well: a registered model deleted and created again reuses version numbers.
        """
        created = self.client().get_model_version(self.registered_model, str(version)).creation_timestamp
        return _download_xgboost(self.tracking_uri, self.registered_model, str(version), created)

    def promote(self, version: str) -> None:
        self.client().set_registered_model_alias(self.registered_model, CHAMPION, version)

    @contextmanager
    def deciding_champion(self, database: PostgresDatabase) -> Iterator[None]:
        """One champion decision at a time per registered model, across runs, processes and hosts.

        MLflow has no compare-and-set on an alias, so the read-compare-move is serialized with a
        PostgreSQL transaction advisory lock on the data database (one per database, so every schema
        and code location sharing it agrees), keyed by the registered model's name. The lock goes
        with the connection: a run that dies while deciding frees it.
        """
        import psycopg

        with database.connect(f"deciding the champion of {self.registered_model}") as conn:
            conn.execute(f"set local lock_timeout = '{CHAMPION_LOCK_TIMEOUT_S}s'")
            try:
                conn.execute(
                    "select pg_advisory_xact_lock(hashtext(%s))", (f"mlflow champion {self.registered_model}",)
                )
            except psycopg.errors.LockNotAvailable:
                raise dg.Failure(
                    f"another run has been deciding the champion of {self.registered_model} for over "
                    f"{CHAMPION_LOCK_TIMEOUT_S} s (PostgreSQL advisory lock): look for a stuck movie_rating_model "
                    "run, cancel it, and re-run this one; the new version stays registered, not champion"
                ) from None
            yield

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in MLflow's classic ML view (the 3.x UI opens its GenAI view by default)."""
        return f"{redact_url(self.tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}"

    def model_version_url(self, version: str) -> str:
        """The registered model version's page, in the classic ML view like `run_url`."""
        root = redact_url(self.tracking_uri).rstrip("/")
        return f"{root}/#/models/{self.registered_model}/versions/{version}?{ML_VIEW}"
