"""MLflow tracking and registry against MLFLOW_TRACKING_URI (artifacts are served by the tracking server)."""

from __future__ import annotations

import tempfile

import dagster as dg
from pydantic import Field

from movie_assets.settings import redact_url

CHAMPION = "champion"


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

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)

    def champion(self):
        """The ModelVersion behind the `champion` alias, or None before the first one."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(self.registered_model, CHAMPION)
        except MlflowException:
            return None

    def load_xgboost(self, version: str):
        """The XGBoost model of a registered version (downloaded to a temp dir that is removed after)."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        with tempfile.TemporaryDirectory() as folder:
            return mlflow.xgboost.load_model(f"models:/{self.registered_model}/{version}", dst_path=folder)

    def promote(self, version: str) -> None:
        self.client().set_registered_model_alias(self.registered_model, CHAMPION, version)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{redact_url(self.tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
