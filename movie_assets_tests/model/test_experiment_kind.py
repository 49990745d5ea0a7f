"""The platform's MLflow experiment is a classic ML one (runs table first), on the test stack's MLflow server."""

import uuid

import pytest

from movie_assets.resources.mlflow import MlflowTracking

KIND = "mlflow.experimentKind"


@pytest.fixture
def tracking(stack_env):
    name = f"test_kind_{uuid.uuid4().hex[:8]}"
    tracking = MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"], experiment=name, registered_model=name)
    yield tracking
    client = tracking.client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        client.delete_experiment(experiment.experiment_id)


def test_a_new_experiment_is_created_as_classic_ml(tracking):
    tracking.activate()
    experiment = tracking.client().get_experiment_by_name(tracking.experiment)
    assert experiment.tags.get(KIND) == "custom_model_development"


def test_an_existing_untagged_experiment_is_tagged_and_a_chosen_kind_is_kept(tracking):
    client = tracking.client()
    experiment_id = client.create_experiment(tracking.experiment)  # as an older platform created it
    tracking.activate()
    assert client.get_experiment(experiment_id).tags.get(KIND) == "custom_model_development"
    client.set_experiment_tag(experiment_id, KIND, "genai_development")  # a user's choice in the UI
    tracking.activate()
    assert client.get_experiment(experiment_id).tags.get(KIND) == "genai_development"


def test_run_links_open_the_machine_learning_view(tracking):
    assert tracking.run_url("3", "abc").endswith("/#/experiments/3/runs/abc?workflowType=machine_learning")


def test_model_version_links_open_the_machine_learning_view():
    tracking = MlflowTracking(tracking_uri="http://127.0.0.1:15000", registered_model="movie_rating_xgb")
    assert tracking.model_version_url("4") == (
        "http://127.0.0.1:15000/#/models/movie_rating_xgb/versions/4?workflowType=machine_learning"
    )
