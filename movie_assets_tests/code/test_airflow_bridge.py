"""The bridge without a running Airflow: month mapping on both sides, task mappings, and the off/unreachable paths."""

import datetime as dt
import importlib.util
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from movie_assets.airflow_bridge import (
    LEGACY_DAG,
    PIPELINE_DAG,
    PIPELINE_TASKS,
    AirflowBridgeError,
    partition_by_data_interval,
    release_month_of_interval,
    with_airflow,
)
from movie_assets.definitions import defs
from movie_platform.local_stack import REPO_ROOT

UTC = dt.timezone.utc


def airflow_side_release_month():
    """airflow/dags/release_month.py, loaded from its file as Airflow's DAG folder does."""
    spec = importlib.util.spec_from_file_location("release_month", REPO_ROOT / "airflow" / "dags" / "release_month.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.release_month


BOTH_SIDES = [airflow_side_release_month(), release_month_of_interval]


@pytest.mark.parametrize("release_month", BOTH_SIDES)
def test_a_monthly_data_interval_is_its_release_month(release_month):
    # A scheduled run of `0 0 1 * *` on 2024-04-01 covers March.
    assert release_month(dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 4, 1, tzinfo=UTC)) == "2024-03-01"
    # Year boundary, and a 29-day February.
    assert release_month(dt.datetime(2023, 12, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=UTC)) == "2023-12-01"
    assert release_month(dt.datetime(2024, 2, 1, tzinfo=UTC), dt.datetime(2024, 3, 1, tzinfo=UTC)) == "2024-02-01"
    # The same instants written in another time zone are the same month.
    berlin = ZoneInfo("Europe/Berlin")
    assert (
        release_month(dt.datetime(2024, 3, 1, 1, tzinfo=berlin), dt.datetime(2024, 4, 1, 2, tzinfo=berlin))
        == "2024-03-01"
    )


@pytest.mark.parametrize("release_month", BOTH_SIDES)
@pytest.mark.parametrize(
    "start, end",
    [
        (dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 3, 2, tzinfo=UTC)),  # a daily schedule
        (dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 5, 1, tzinfo=UTC)),  # two months
        (dt.datetime(2024, 3, 15, tzinfo=UTC), dt.datetime(2024, 4, 15, tzinfo=UTC)),  # a month, not a calendar month
    ],
)
def test_an_interval_that_is_not_one_calendar_month_is_refused(release_month, start, end):
    with pytest.raises((ValueError, AirflowBridgeError), match="not one (calendar|release) month"):
        release_month(start, end)


def test_sensor_materializations_get_the_month_of_the_data_interval_not_the_logical_date():
    """A manual trigger on 2024-04-10 has that logical date but covers March (Airflow infers the interval)."""
    run = {
        "data_interval_start": "2024-03-01T00:00:00+00:00",
        "data_interval_end": "2024-04-01T00:00:00+00:00",
        "logical_date": "2024-04-10T08:00:00+00:00",
    }

    class AirflowData:
        airflow_mapped_asset_specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}

    mats = [
        dg.AssetMaterialization(key, metadata={"Run Metadata (raw)": dg.MetadataValue.json(run)})
        for key in ("movies_raw", "partner_ratings")
    ]
    out = {m.asset_key.to_user_string(): m.partition for m in partition_by_data_interval(None, AirflowData(), mats)}
    assert out == {"movies_raw": "2024-03-01", "partner_ratings": None}


def test_pipeline_tasks_map_to_our_assets_and_the_legacy_dag_to_an_external_one():
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    for task, keys in PIPELINE_TASKS.items():
        for key in keys:
            assert specs[key].metadata["dagster-airlift/task-mapping"] == [{"dag_id": PIPELINE_DAG, "task_id": task}]
    mapped = {k for ks in PIPELINE_TASKS.values() for k in ks}
    # Every task's assets share the release-month partitions: one Dagster run per task and month.
    assert all(specs[k].partitions_def == specs["movies_raw"].partitions_def for k in mapped)
    assert specs["partner_ratings"].metadata["dagster-airlift/task-mapping"] == [
        {"dag_id": LEGACY_DAG, "task_id": "receive_ratings_file"}
    ]
    assert not defs.resolve_asset_graph().get(dg.AssetKey("partner_ratings")).is_executable, (
        "Airflow produces it; Dagster only observes"
    )


def test_proxied_state_and_dag_files_name_the_mapped_tasks():
    state = (REPO_ROOT / "airflow" / "dags" / "proxied_state" / f"{PIPELINE_DAG}.yaml").read_text()
    assert set(re.findall(r"- id: (\w+)\n\s+proxied: True", state)) == set(PIPELINE_TASKS)
    dag_file = (REPO_ROOT / "airflow" / "dags" / f"{PIPELINE_DAG}.py").read_text()
    assert all(f'task_id="{task}"' in dag_file for task in PIPELINE_TASKS)
    assert 'task_id="receive_ratings_file"' in (REPO_ROOT / "airflow" / "dags" / f"{LEGACY_DAG}.py").read_text()


def test_without_airflow_url_the_location_loads_without_the_bridge():
    assert with_airflow(defs, environ={}) is defs
    assert not any("airflow" in s.name for s in defs.sensors or [])
    assert not any(k.path[0] == "airflow" for k in defs.resolve_asset_graph().get_all_asset_keys())


def test_an_unreachable_airflow_says_so_without_a_traceback_or_the_password():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environ = {"AIRFLOW_URL": f"http://127.0.0.1:{port}", "AIRFLOW_USERNAME": "admin", "AIRFLOW_PASSWORD": "s3cr3t-pw"}
    with pytest.raises(AirflowBridgeError) as error:
        with_airflow(defs, environ=environ)
    message = str(error.value)
    assert f"127.0.0.1:{port}" in message and "unreachable" in message and "make airflow" in message
    assert "s3cr3t-pw" not in message and "Max retries" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_refused_credentials_name_the_user_not_the_password():
    class Refuses(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    environ = {
        "AIRFLOW_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "AIRFLOW_USERNAME": "admin",
        "AIRFLOW_PASSWORD": "s3cr3t-pw",
    }
    try:
        with pytest.raises(AirflowBridgeError, match="refused the credentials of AIRFLOW_USERNAME=admin") as error:
            with_airflow(defs, environ=environ)
    finally:
        server.shutdown()
    assert "s3cr3t-pw" not in str(error.value)


def test_missing_credentials_are_named():
    with pytest.raises(AirflowBridgeError, match="AIRFLOW_USERNAME or AIRFLOW_PASSWORD"):
        with_airflow(defs, environ={"AIRFLOW_URL": "http://127.0.0.1:9"})


def test_airflow_venv_pins_the_same_airlift_as_setup_py():
    setup = (REPO_ROOT / "setup.py").read_text()
    requirements = (REPO_ROOT / "airflow" / "requirements.txt").read_text()
    assert 'f"dagster-airlift=={DAGSTER_LIBS}"' in setup
    pin = re.search(r'DAGSTER_LIBS = "([\d.]+)"', setup).group(1)
    assert f"dagster-airlift[in-airflow]=={pin}" in requirements
    assert "apache-airflow==2.11.*" in requirements
