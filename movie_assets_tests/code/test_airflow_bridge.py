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
    legacy_dag_assets,
    partition_by_data_interval,
    release_month_of_interval,
    with_airflow,
)
from movie_assets.definitions import defs
from movie_assets_tests.conftest import free_port
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
        airflow_mapped_asset_specs = {spec.key: spec for spec in bridged_defs().resolve_all_asset_specs()}

    mats = [
        dg.AssetMaterialization(key, metadata={"Run Metadata (raw)": dg.MetadataValue.json(run)})
        for key in ("movies_raw", "partner_ratings")
    ]
    out = {m.asset_key.to_user_string(): m.partition for m in partition_by_data_interval(None, AirflowData(), mats)}
    assert out == {"movies_raw": "2024-03-01", "partner_ratings": None}


def bridged_defs() -> dg.Definitions:
    """Our definitions plus what the bridge adds before airlift fetches the DAGs (`bridged`)."""
    return dg.Definitions.merge(defs, dg.Definitions(assets=legacy_dag_assets()))


def test_pipeline_tasks_map_to_our_assets_and_the_legacy_dag_to_an_external_one():
    specs = {spec.key.to_user_string(): spec for spec in bridged_defs().resolve_all_asset_specs()}
    for task, keys in PIPELINE_TASKS.items():
        for key in keys:
            assert specs[key].metadata["dagster-airlift/task-mapping"] == [{"dag_id": PIPELINE_DAG, "task_id": task}]
    mapped = {k for ks in PIPELINE_TASKS.values() for k in ks}
    # Every task's assets share the release-month partitions: one Dagster run per task and month.
    assert all(specs[k].partitions_def == specs["movies_raw"].partitions_def for k in mapped)
    assert specs["partner_ratings"].metadata["dagster-airlift/task-mapping"] == [
        {"dag_id": LEGACY_DAG, "task_id": "receive_ratings_file"}
    ]
    assert not bridged_defs().resolve_asset_graph().get(dg.AssetKey("partner_ratings")).is_executable, (
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
    graph = defs.resolve_asset_graph()
    assert not any(k.path[0] == "airflow" for k in graph.get_all_asset_keys())
    # No group `airflow` in the lineage while nothing from Airflow can arrive: the legacy DAG's
    # `partner_ratings` joins only with the bridge (nothing of ours depends on it).
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert "airflow" not in groups and dg.AssetKey("partner_ratings") not in graph.get_all_asset_keys(), groups


BRIDGE_SENSOR = "airflow__airflow_dag_status_sensor"  # airlift's sensor; its stand-in keeps the name
PASSWORD = "s3cr3t-pw"


def bridge_environ(port: int) -> dict[str, str]:
    return {"AIRFLOW_URL": f"http://127.0.0.1:{port}", "AIRFLOW_USERNAME": "admin", "AIRFLOW_PASSWORD": PASSWORD}


def tick_failure(loaded: dg.Definitions) -> tuple[str, str]:
    """(the error of one evaluation of the bridge's sensor, its description), as the daemon's tick would get them."""
    sensor = loaded.resolve_sensor_def(BRIDGE_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, "a stopped sensor shows no failing tick"
    with pytest.raises(Exception) as error:
        sensor.evaluate_tick(dg.build_sensor_context(sensor_name=BRIDGE_SENSOR))
    # The tick's error as the UI lists it: Dagster's wrapper, then the sensor's own exception.
    chain, exc = [], error.value
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    return "\n".join(chain), sensor.description or ""


def names(loaded: dg.Definitions) -> dict[str, set[str]]:
    graph = loaded.resolve_asset_graph()
    return {
        "assets": {k.to_user_string() for k in graph.get_all_asset_keys()},
        "checks": {str(k) for k in graph.asset_check_keys},
        "jobs": {j.name for j in loaded.resolve_all_job_defs()},
        "schedules": {s.name for s in loaded.schedules or []},
        "sensors": {s.name for s in loaded.sensors or []},
    }


class FakeAirflow:
    """Airflow's REST API as far as the bridge's probe needs: one status for every GET, changeable."""

    def __init__(self, status: int, body: bytes = b'{"dags": [], "total_entries": 0}'):
        self.status, self.body, self.gets = status, body, 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                fake.gets += 1
                status, body = fake.answer()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self) -> tuple[int, bytes]:
        return self.status, self.body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_unreachable_airflow_loads_everything_else_and_the_bridge_sensor_says_why(caplog):
    port = free_port()
    with caplog.at_level("WARNING", logger="movie_assets.airflow_bridge"):
        loaded = with_airflow(defs, environ=bridge_environ(port))
    dg.Definitions.validate_loadable(loaded)
    before, after = names(defs), names(loaded)
    assert after == {**before, "sensors": before["sensors"] | {BRIDGE_SENSOR}}, "only the bridge's sensor is new"
    assert f"127.0.0.1:{port}" in caplog.text and "unreachable" in caplog.text and PASSWORD not in caplog.text

    message, description = tick_failure(loaded)
    for text in (message, description):
        assert f"127.0.0.1:{port}" in text and "AIRFLOW_URL" in text and "unreachable" in text, text
        assert "make airflow" in text and "reload the code location" in text, text
        assert PASSWORD not in text and "Max retries" not in text, text


def test_the_definitions_module_loads_with_airflow_down():
    """What `dagster dev -m movie_assets` does, in a process of its own: import the module with AIRFLOW_URL set."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json\n"
        "from movie_assets.definitions import defs\n"
        "from movie_assets_tests.code.test_airflow_bridge import names, tick_failure\n"
        "message, _ = tick_failure(defs)\n"
        "print(json.dumps({'names': {k: sorted(v) for k, v in names(defs).items()}, 'tick': message}))\n"
    )
    port = free_port()
    env = {**os.environ, **bridge_environ(port)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    expected = names(defs)  # this process: AIRFLOW_URL unset (the tests' environment)
    assert {k: set(v) for k, v in loaded["names"].items()} == {
        **expected,
        "sensors": expected["sensors"] | {BRIDGE_SENSOR},
    }
    assert f"127.0.0.1:{port}" in loaded["tick"] and "unreachable" in loaded["tick"]
    assert f"127.0.0.1:{port}" in done.stderr and "without the Airflow bridge" in done.stderr, "the load warns"
    assert PASSWORD not in done.stdout + done.stderr


def test_refused_credentials_name_the_user_not_the_password():
    airflow = FakeAirflow(401)
    try:
        loaded = with_airflow(defs, environ=bridge_environ(airflow.port))
        message, description = tick_failure(loaded)
    finally:
        airflow.close()
    for text in (message, description):
        assert "refused the credentials of AIRFLOW_USERNAME=admin" in text and PASSWORD not in text, text


def test_missing_credentials_are_named():
    loaded = with_airflow(defs, environ={"AIRFLOW_URL": f"http://127.0.0.1:{free_port()}"})
    message, description = tick_failure(loaded)
    assert "AIRFLOW_USERNAME or AIRFLOW_PASSWORD" in message and "AIRFLOW_USERNAME or AIRFLOW_PASSWORD" in description


def test_airflow_failing_while_the_dags_load_is_reported_without_the_password():
    """The probe passes, then airlift's DAG listing gets a 500 whose body quotes the password."""
    airflow = FakeAirflow(200)
    answers = iter([(200, airflow.body)])
    airflow.answer = lambda: next(answers, (500, f'{{"detail": "boom for admin:{PASSWORD}"}}'.encode()))
    try:
        loaded = with_airflow(defs, environ=bridge_environ(airflow.port))
        _, description = tick_failure(loaded)
    finally:
        airflow.close()
    assert "failed while the bridge loaded its DAGs" in description and "500" in description, description
    assert PASSWORD not in description


def test_an_airflow_without_our_dags_is_named_in_the_bridge_sensor():
    """Airflow answers every call, with no DAGs at all: the mapped DAG is missing, not a KeyError at load."""
    airflow = FakeAirflow(200, body=b'{"dags": [], "datasets": [], "total_entries": 0}')
    try:
        loaded = with_airflow(defs, environ=bridge_environ(airflow.port))
        _, description = tick_failure(loaded)
    finally:
        airflow.close()
    assert f"has no DAG {PIPELINE_DAG}" in description and "airflow/dags" in description, description


def test_a_tick_after_airflow_came_back_says_only_a_reload_is_missing():
    airflow = FakeAirflow(503)
    try:
        loaded = with_airflow(defs, environ=bridge_environ(airflow.port))
        down, _ = tick_failure(loaded)
        airflow.status = 200
        back, _ = tick_failure(loaded)
    finally:
        airflow.close()
    assert "HTTP 503" in down
    assert "answers now" in back and "reload the code location" in back, back


def test_airflow_venv_pins_the_same_airlift_as_setup_py():
    setup = (REPO_ROOT / "setup.py").read_text()
    requirements = (REPO_ROOT / "airflow" / "requirements.txt").read_text()
    assert 'f"dagster-airlift=={DAGSTER_LIBS}"' in setup
    pin = re.search(r'DAGSTER_LIBS = "([\d.]+)"', setup).group(1)
    assert f"dagster-airlift[in-airflow]=={pin}" in requirements
    assert "apache-airflow==2.11.*" in requirements
