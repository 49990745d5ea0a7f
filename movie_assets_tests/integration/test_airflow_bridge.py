"""End to end: real Airflow 2.11 schedules, real `dagster dev` materializes, the airlift sensor observes.

Airflow comes from `.venv-airflow` (installed here if missing); Dagster runs on the
test stack's PostgreSQL/Redis with its own instance folder, schema and object store,
so nothing here touches what the other tests read.
"""

import os
import signal
import subprocess
import time
import uuid

import pytest
import requests

from movie_assets.airflow_bridge import PIPELINE_TASKS
from movie_assets_tests.conftest import log_to_pytest, stop_process_group, wait_for
from movie_platform.airflow_runtime import AirflowRuntime
from movie_platform.browser import dev_command
from movie_platform.local_stack import _alive

AIRFLOW_PORT = 28080
DAGSTER_PORT = 23000
DAGSTER_URL = f"http://127.0.0.1:{DAGSTER_PORT}"
MONTH = "2024-03-01"  # a past sample month; the run below is triggered on 2024-04-01, so its interval is March
LOGICAL_DATE = "2024-04-01T00:00:00+00:00"
DAG_RUN_ID_TAG = "dagster-airlift/airflow-dag-run-id"


@pytest.fixture(scope="module")
def airflow(stack_env, tmp_path_factory):
    # A fresh Airflow home: its SQLite database holds only this test's runs.
    runtime = AirflowRuntime(
        tmp_path_factory.mktemp("airflow_state"),
        environ={
            "AIRFLOW_PORT": str(AIRFLOW_PORT),
            "DAGSTER_URL": DAGSTER_URL,
            # Only the runs this test triggers: no scheduled run of the latest interval on unpause.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "PARTNER_DROP_DIR": str(tmp_path_factory.mktemp("partner_drops")),
            # A leading "-" once made `airflow users create --password` read the password as an option.
            "AIRFLOW_PASSWORD": f"-e2e-{uuid.uuid4().hex[:12]}",
        },
    )
    env = runtime.up(log=log_to_pytest("airflow"))
    yield runtime, env
    pids = [row["pid"] for row in runtime.status()]
    runtime.down(log=log_to_pytest("airflow"))
    assert not any(_alive(pid) for pid in pids), "Airflow processes left running"


@pytest.fixture(scope="module")
def dagster_dev(stack_env, airflow, tmp_path_factory):
    _, airflow_env = airflow
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        **stack_env,
        **airflow_env,
        "DAGSTER_HOME": str(home),
        "MOVIE_DB_SCHEMA": f"airflow_e2e_{uuid.uuid4().hex[:6]}",
        "MOVIE_STORAGE_URL": (tmp_path_factory.mktemp("objects")).as_uri(),
        "TMDB_SOURCE": "sample",
        "AIRFLOW_SENSOR_INTERVAL_SECONDS": "5",
        # This test is about the bridge: the runs it counts are the proxied tasks' own. (With the bridge on,
        # automation leaves the DAG's assets alone anyway; the rest would apply Feast to the default project.)
        "MOVIE_AUTOMATION": "off",
    }
    log_file = home / "dagster-dev.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            dev_command(DAGSTER_PORT),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "movies_raw" in _asset_keys(), 240, "dagster dev to load the code location", log_file, interval=2
        )
        yield log_file
    finally:
        stop_process_group(proc, signal.SIGINT, timeout=60)


def test_airflow_dag_materializes_the_month_in_dagster_and_the_sensor_observes_legacy_runs(airflow, dagster_dev):
    runtime, env = airflow
    api = AirflowApi(runtime.url, (env["AIRFLOW_USERNAME"], env["AIRFLOW_PASSWORD"]))

    # Airflow -> Dagster: the proxied tasks launch one Dagster run each for March 2024.
    run_id = api.trigger("movie_pipeline_monthly", logical_date=LOGICAL_DATE)
    api.wait_success("movie_pipeline_monthly", run_id, timeout=600)
    runs = graphql(
        """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
        ... on Runs { results { runId status tags { key value } } } } }""",
        tags=[{"key": DAG_RUN_ID_TAG, "value": run_id}],
    )["runsOrError"]["results"]
    tags = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]} for r in runs}
    assert {t["dagster-airlift/airflow-task-id"] for t in tags.values()} == set(PIPELINE_TASKS)
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    assert all(t["dagster/partition"] == MONTH for t in tags.values()), tags
    for asset in (key for keys in PIPELINE_TASKS.values() for key in keys):
        mats = materializations(asset, partitions=[MONTH])
        assert mats and mats[-1]["runId"] in tags, f"{asset} {MONTH} not materialized by a run of Airflow run {run_id}"

    # Airflow only, observed: the sensor turns the legacy DAG's run into a materialization.
    legacy_run_id = api.trigger("partner_ratings_drop")
    api.wait_success("partner_ratings_drop", legacy_run_id, timeout=300)
    wait_for(
        lambda: any(_entry(m, "Airflow Run ID") == legacy_run_id for m in materializations("partner_ratings")),
        120,
        "the airlift sensor to record partner_ratings",
        dagster_dev,
        interval=2,
    )
    dag_asset = materializations("airflow/dag/partner_ratings_drop")
    assert any(_entry(m, "Airflow Run ID") == legacy_run_id for m in dag_asset)


class AirflowApi:
    """The few calls of Airflow's REST API v1 the test needs, with basic auth."""

    def __init__(self, url: str, auth: tuple[str, str]):
        self.url, self.session = f"{url}/api/v1", requests.Session()
        self.session.auth = auth

    def trigger(self, dag_id: str, logical_date: str | None = None) -> str:
        wait_for(
            lambda: self.session.get(f"{self.url}/dags/{dag_id}", timeout=5).status_code == 200,
            120,
            f"Airflow to parse {dag_id}",
            interval=2,
        )
        self.session.patch(f"{self.url}/dags/{dag_id}", json={"is_paused": False}, timeout=10).raise_for_status()
        body = {
            "dag_run_id": f"e2e__{uuid.uuid4().hex[:8]}",
            **({"logical_date": logical_date} if logical_date else {}),
        }
        response = self.session.post(f"{self.url}/dags/{dag_id}/dagRuns", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return body["dag_run_id"]

    def wait_success(self, dag_id: str, run_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.session.get(f"{self.url}/dags/{dag_id}/dagRuns/{run_id}", timeout=10).json()["state"]
            if state == "success":
                return
            if state == "failed":
                pytest.fail(f"Airflow run {dag_id}/{run_id} failed:\n{self.failed_logs(dag_id, run_id)}")
            time.sleep(2)
        pytest.fail(f"Airflow run {dag_id}/{run_id} not done in {timeout}s")

    def failed_logs(self, dag_id: str, run_id: str) -> str:
        tasks = self.session.get(f"{self.url}/dags/{dag_id}/dagRuns/{run_id}/taskInstances", timeout=10).json()[
            "task_instances"
        ]
        return "\n".join(
            self.session.get(
                f"{self.url}/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{t['task_id']}"
                f"/logs/{max(t['try_number'], 1)}",
                headers={"Accept": "text/plain"},
                timeout=10,
            ).text[-3000:]
            for t in tasks
            if t["state"] == "failed"
        )


def graphql(query: str, **variables) -> dict:
    response = requests.post(f"{DAGSTER_URL}/graphql", json={"query": query, "variables": variables}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def materializations(asset: str, partitions: list[str] | None = None) -> list[dict]:
    data = graphql(
        """query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) {
        ... on Asset { assetMaterializations(partitions: $partitions) { runId partition timestamp
            metadataEntries { label ... on TextMetadataEntry { text } } } } } }""",
        key={"path": asset.split("/")},
        partitions=partitions,
    )
    return sorted(data["assetOrError"].get("assetMaterializations") or [], key=lambda m: float(m["timestamp"]))


def _entry(materialization: dict, label: str) -> str | None:
    return next((e.get("text") for e in materialization["metadataEntries"] if e["label"] == label), None)


def _asset_keys() -> set[str]:
    try:
        nodes = graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]
    except (requests.RequestException, AssertionError):
        return set()
    return {"/".join(n["assetKey"]["path"]) for n in nodes}
