"""Airflow's half of the Dagster bridge: a proxied task asks Dagster to materialize its assets.

`proxying_to_dagster` swaps each proxied task for this operator. It finds the assets
mapped to the task (`assets_with_task_mappings` in movie_assets/airflow_bridge.py)
through the Dagster webserver's GraphQL at DAGSTER_URL, launches one run for the
release month of the DAG run's data interval, tags it with the Airflow run id and
waits for it (and its retries) to finish.
"""

import os

import requests
from airflow.exceptions import AirflowException, AirflowFailException
from dagster_airlift.in_airflow import BaseProxyTaskToDagsterOperator
from dagster_airlift.in_airflow.gql_queries import TRIGGER_ASSETS_MUTATION
from release_month import release_month

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"


class MovieAssetsOperator(BaseProxyTaskToDagsterOperator):
    """Materializes the task's Dagster assets for the run's release month."""

    def get_dagster_session(self, context) -> requests.Session:
        return requests.Session()

    def get_dagster_url(self, context) -> str:
        return os.environ.get("DAGSTER_URL", DEFAULT_DAGSTER_URL).rstrip("/")

    def get_partition_key(self, context, partitioning_info) -> str:
        try:
            key = release_month(context["data_interval_start"], context["data_interval_end"])
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        keys = partitioning_info.partition_keys
        if key not in keys:
            raise AirflowFailException(
                f"release month {key} is not a partition of the Dagster assets (they span {keys[0]} .. {keys[-1]})"
            )
        self.log.info("Airflow run %s covers release month %s", context["dag_run"].run_id, key)
        return key

    def launch_dagster_run(self, context, session, dagster_url: str, execution_params) -> str:
        """airlift's launch, with two fixes: the selected assets' own checks run too (airlift selects none,
        which Dagster refuses for assets with checks), and a refused launch says why instead of KeyError: 'run'."""
        selector = {k: v for k, v in execution_params["selector"].items() if k != "assetCheckSelection"}
        execution_params = {**execution_params, "selector": selector}  # no check selection = the assets' checks
        response = session.post(
            f"{dagster_url}/graphql",
            json={"query": TRIGGER_ASSETS_MUTATION, "variables": {"executionParams": execution_params}},
            timeout=30,
        )
        launch = self.get_valid_graphql_response(response, "launchPipelineExecution")
        if launch.get("__typename") != "LaunchRunSuccess":
            reason = launch.get("message") or "; ".join(e["message"] for e in launch.get("errors", []))
            raise AirflowFailException(
                f"Dagster at {dagster_url} refused the run ({launch.get('__typename')}): {reason}"
            )
        return launch["run"]["id"]

    def launch_runs_for_task(self, context, dag_id: str, task_id: str) -> None:
        url = self.get_dagster_url(context)
        try:
            return super().launch_runs_for_task(context, dag_id, task_id)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise AirflowException(
                f"Dagster webserver at {url} (DAGSTER_URL) is unreachable ({type(exc).__name__}): "
                "start it (`make dev`, or `docker compose up`) and clear this task to retry"
            ) from None
