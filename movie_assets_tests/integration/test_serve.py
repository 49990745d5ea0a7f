"""`movie-platform serve` as a real process on the test stack: features, scores, a champion that moves, errors.

The data are the test's own: a Feast project with 12 fresh movies and one stale one (its row
100 days old, past the view's 90-day TTL) in Redis, and a registered model with two real
XGBoost versions in MLflow (each trained on those features, so their scores differ). The server
polls the registry every 0.5 s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pandas as pd
import pytest
import redis
import requests

from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.object_store import ObjectStore
from movie_assets.resources.online_materialize import materialize_parallel
from movie_assets_tests.conftest import movie_platform_cli, own_feast_project, stop_process_group, wait_for
from movie_assets_tests.integration.test_online_store import WINDOW, feature_rows, layout_of, write_offline
from movie_assets_tests.integration.test_stack_ownership import STACK_VARS, free_ports
from movie_platform.local_stack import Stack

ONLINE = list(range(1, 13))
OLD, UNKNOWN = 99, 424242
POLL_SECONDS = 0.5
OLD_EVENT = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=100)


@pytest.fixture(scope="module")
def feast(stack_env, tmp_path_factory):
    """Own project: ids 1..12 materialized (yesterday's rows), id 99 a copy of 1 stamped 100 days ago (old TTL: 90)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    objects = ObjectStore(storage_url=(tmp_path_factory.mktemp("serve") / "objects").as_uri())
    rows = feature_rows(ONLINE, pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(days=1))
    write_offline(objects, "2024-01-01", rows)
    feast = own_feast_project(stack_env, objects.storage_url, prefix="serve")
    feast.store().apply(list(feast.definitions().values()))
    materialize_parallel(feast, *WINDOW, workers=1)
    layout = layout_of(feast)
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    source, old = layout.keys(np.array([1, OLD]))
    stamp = Timestamp()
    stamp.FromDatetime(OLD_EVENT)
    client.hset(old, mapping={**client.hgetall(source), layout.ts_field: stamp.SerializeToString()})
    return feast


@pytest.fixture(scope="module")
def tracking(stack_env, feast):
    """Registered model of the test's own with two XGBoost versions trained on the online rows; champion v1."""
    import mlflow
    from mlflow.models import infer_signature
    from xgboost import XGBRegressor

    from movie_assets.resources.online_writer import read_latest

    name = f"test_serve_{uuid.uuid4().hex[:8]}"
    tracking = MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"], experiment=name, registered_model=name)
    tracking.activate()
    store = feast.store()
    frame = read_latest(store, store.get_feature_view("movie_features"), ONLINE)[FEATURE_NAMES]
    for depth, target in ((1, frame["runtime"] / 10), (3, 10 - frame["log_budget"] / 5)):
        model = XGBRegressor(n_estimators=20, max_depth=depth, n_jobs=1).fit(frame, target)
        with mlflow.start_run():
            signature = infer_signature(frame, model.predict(frame))
            mlflow.xgboost.log_model(model, name="model", signature=signature, registered_model_name=name)
    tracking.promote("1")
    yield tracking
    client = tracking.client()
    client.delete_registered_model(name)
    client.delete_experiment(client.get_experiment_by_name(name).experiment_id)


def serve_env(stack_env, feast, tracking, state_dir, **variables) -> dict[str, str]:
    """`movie-platform`'s env in front of the test's project and model; serve is recorded in `state_dir`'s stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_VARS)}
    env.update({k: v for k, v in stack_env.items() if not k.startswith("FEAST_")})
    env.update(
        MOVIE_PLATFORM_STATE_DIR=str(state_dir),
        MOVIE_FEAST_PROJECT=feast.project,
        MOVIE_STORAGE_URL=feast.storage_url,
        MOVIE_MODEL_NAME=tracking.registered_model,
        MOVIE_SERVE_POLL_SECONDS=str(POLL_SECONDS),
        **variables,
    )
    return env


@contextlib.contextmanager
def serving(stack_env, feast, tracking, log_dir, **variables):
    """`movie-platform serve` on a free loopback port, in front of the test's project and model."""
    port = free_ports(1)[0]
    env = serve_env(stack_env, feast, tracking, log_dir / "stack", **variables)
    log_file = log_dir / "serve.log"
    with log_file.open("wb") as out, (log_dir / "serve.stdout").open("wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "movie_platform.cli", "serve", "--port", str(port)],
            env=env,
            stdout=stdout,
            stderr=out,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Up once /health answers at all (503 while degraded: what some tests want to see).
        wait_for(
            lambda: proc.poll() is not None or requests.get(f"{url}/health", timeout=2).status_code,
            90,
            "serve",
            log_file,
        )
        assert proc.poll() is None, log_file.read_text()
        yield url, proc, log_file
    finally:
        stop_process_group(proc, 15)


@pytest.fixture(scope="module")
def server(stack_env, feast, tracking, tmp_path_factory):
    with serving(stack_env, feast, tracking, tmp_path_factory.mktemp("serve-log")) as running:
        wait_for(lambda: requests.get(f"{running[0]}/health", timeout=2).ok, 90, "serve's health", running[2])
        yield running


def test_health_names_refused_redis_credentials(stack_env, feast, tracking, tmp_path):
    """A wrong Redis password is not "Redis did not answer" (issue 28)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(stack_env["MOVIE_REDIS_URL"])
    wrong = urlunsplit(parts._replace(netloc=f":not-the-password@{parts.hostname}:{parts.port}"))
    with serving(stack_env, feast, tracking, tmp_path, MOVIE_REDIS_URL=wrong) as (url, _, log_file):
        health = requests.get(f"{url}/health", timeout=10)
        assert health.status_code == 503, health.text
        error = health.json()["redis"]["error"]
        assert "refused the credentials in MOVIE_REDIS_URL" in error and "not-the-password" not in health.text, error
        features = requests.get(f"{url}/features", params={"movie_id": 1}, timeout=10)
        assert features.status_code == 503 and "refused the credentials" in features.json()["error"], features.text


def predict(url: str, ids: list) -> requests.Response:
    return requests.post(f"{url}/predict", json={"movie_ids": ids}, timeout=10)


def post_raw(url: str, body: bytes) -> requests.Response:
    return requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=30)


def own_scores(tracking, feast, version: str, ids: list[int]) -> dict[int, float]:
    """What the version's own model (MLflow's flavor, sklearn `predict`) says for the online rows."""
    from movie_assets.resources.online_writer import read_latest

    store = feast.store()
    frame = read_latest(store, store.get_feature_view("movie_features"), ids)[FEATURE_NAMES]
    return dict(zip(ids, tracking.load_xgboost(version).predict(frame).tolist(), strict=True))


def scores_of(response: requests.Response) -> dict[int, float]:
    return {p["movie_id"]: p["vote_average"] for p in response.json()["predictions"]}


def test_features_are_the_online_stores_and_health_names_the_model(server, feast, tracking):
    from movie_assets.resources.online_writer import read_latest

    url, _, _ = server
    response = requests.get(f"{url}/features", params={"movie_id": [3, 1, 3, 7]}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    store = feast.store()
    expected = read_latest(store, store.get_feature_view("movie_features"), [3, 1, 7])
    assert body["feature_service"] == "movie_rating_v1"
    assert [m["movie_id"] for m in body["movies"]] == [3, 1, 7], "each id once, in the asked order"
    for movie in body["movies"]:
        assert movie["features"] == expected.loc[movie["movie_id"]].to_dict()
    assert body["not_online"] == [] and body["stale"] == []

    health = requests.get(f"{url}/health", timeout=10)
    assert health.status_code == 200, health.text
    state = health.json()
    assert state["redis"]["ok"] and state["registry"]["ok"]
    assert state["model"] == {"name": tracking.registered_model, "version": "1", "alias": "champion"}


def test_predictions_are_the_champions_own(server, feast, tracking):
    url, _, _ = server
    response = predict(url, [1, 2, 5])
    assert response.status_code == 200, response.text
    version = response.json()["model"]["version"]
    assert version == tracking.champion().version
    assert scores_of(response) == pytest.approx(own_scores(tracking, feast, version, [1, 2, 5]), abs=1e-6)


def test_unknown_old_and_bad_requests_are_named(server, feast):
    """An id with no key is named not_online; a row 100 days old is served: features never expire (issue 26)."""
    url, _, _ = server
    unknown = requests.get(f"{url}/features", params={"movie_id": [UNKNOWN]}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["not_online"] == [UNKNOWN]
    assert str(UNKNOWN) in unknown.json()["error"]

    old = predict(url, [OLD])
    assert old.status_code == 200, old.text
    assert list(scores_of(old)) == [OLD] and old.json()["stale"] == []

    mixed = predict(url, [2, UNKNOWN, OLD])
    assert mixed.status_code == 200, mixed.text
    assert list(scores_of(mixed)) == [2, OLD]
    assert mixed.json()["not_online"] == [UNKNOWN] and mixed.json()["stale"] == []

    # Every malformed or oversized request: its status and a part of the reason it names. One line per case.
    hostile = {
        "not a number": (requests.get(f"{url}/features", params={"movie_id": "abc"}, timeout=10), 400, "not TMDB"),
        "no id": (requests.get(f"{url}/features", timeout=10), 400, "no movie ids"),
        "not JSON": (requests.post(f"{url}/predict", data=b"{not json", timeout=10), 400, "must be JSON"),
        "no movie_ids": (requests.post(f"{url}/predict", json={"ids": [1]}, timeout=10), 400, '"movie_ids"'),
        "bad ids": (predict(url, [1, -5, 2.5, True]), 400, "-5"),
        "1,001 ids": (predict(url, list(range(1, 1002))), 400, "at most 1000"),
        "8 kB id": (requests.get(f"{url}/features", params={"movie_id": "9" * 8000}, timeout=10), 400, "not TMDB"),
        "64 kB id in JSON": (post_raw(url, b'{"movie_ids": [' + b"9" * 64_000 + b"]}"), 400, "must be JSON"),
        "nested 100k deep": (post_raw(url, b"[" * 100_000 + b"]" * 100_000), 413, "at most 100,000"),
        "nested 5k deep": (post_raw(url, b"[" * 5_000 + b"]" * 5_000), 400, "nests too deep"),
        "2 MB body": (post_raw(url, b" " * 2_000_000 + b'{"movie_ids": [1]}'), 413, "at most 100,000"),
    }
    for case, (response, status, reason) in hostile.items():
        assert response.status_code == status, (case, response.status_code, response.text[:300])
        assert reason in response.json()["error"], (case, response.text[:300])


def test_a_moved_champion_is_served_without_a_restart_and_never_mixed(server, feast, tracking):
    url, proc, log_file = server
    ids = ONLINE[:8]
    expected = {version: own_scores(tracking, feast, version, ids) for version in ("1", "2")}
    assert expected["1"] != pytest.approx(expected["2"]), "the two versions must score differently"
    tracking.promote("1")
    wait_for(lambda: predict(url, ids).json()["model"]["version"] == "1", 10, "v1 served", log_file)

    # Clients keep asking while the alias moves: each answer is one version's scores, labelled with it.
    answers: list[dict] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            answers.append(predict(url, ids).json())

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for asker in askers:
        asker.start()
    moved = time.monotonic()
    tracking.promote("2")
    try:
        wait_for(lambda: predict(url, ids).json()["model"]["version"] == "2", 10, "v2 served", log_file)
        switched = time.monotonic() - moved
        time.sleep(0.3)
    finally:
        stop.set()
        for asker in askers:
            asker.join()
    assert proc.poll() is None, "the server restarted"
    assert switched < POLL_SECONDS + 5, f"v2 served {switched:.1f} s after the alias moved"
    versions = [answer["model"]["version"] for answer in answers]
    assert "1" in versions and "2" in versions, "the clients saw both versions"
    for answer in answers:
        got = {p["movie_id"]: p["vote_average"] for p in answer["predictions"]}
        assert got == pytest.approx(expected[answer["model"]["version"]], abs=1e-6), answer["model"]
    assert "serving " + tracking.registered_model + " v2" in log_file.read_text()

    # The alias removed: 503 naming what to materialize, health says so; back as soon as it returns.
    tracking.client().delete_registered_model_alias(tracking.registered_model, "champion")
    wait_for(lambda: predict(url, ids).status_code == 503, 10, "503 without a champion", log_file)
    message = predict(url, ids).json()["error"]
    assert "movie_rating_model" in message and tracking.registered_model in message, message
    health = requests.get(f"{url}/health", timeout=10)
    assert health.status_code == 503 and health.json()["model"] is None
    tracking.promote("1")
    wait_for(lambda: predict(url, ids).status_code == 200, 10, "v1 served again", log_file)


def test_a_taken_port_fails_at_once_naming_the_variable_before_anything_loads(stack_env, feast, tracking, tmp_path):
    """With its port taken, serve loaded the registry and the model, then died 12 s in on uvicorn's `[Errno 98]`."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = serve_env(stack_env, feast, tracking, tmp_path / "stack", MOVIE_SERVE_PORT=str(port))
        started = time.monotonic()
        result = movie_platform_cli("serve", env=env, timeout=120)
        took = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr and "set MOVIE_SERVE_PORT" in result.stderr, (
        result.stderr
    )
    assert "features of" not in result.stderr and "serving " not in result.stderr, "nothing loads before the port"
    assert took < 8, f"{took:.1f} s: {result.stderr[-2000:]}"
    assert "serve" not in Stack(tmp_path / "stack").load()["services"], "a serve that never ran is not recorded"


def test_a_running_serve_is_listed_by_status_and_stopped_by_down(stack_env, feast, tracking, tmp_path):
    """`make status` did not list a running serve, and `make down` left it running."""
    with serving(stack_env, feast, tracking, tmp_path) as (url, proc, log_file):
        env = serve_env(stack_env, feast, tracking, tmp_path / "stack")
        status = movie_platform_cli("status", env=env)
        line = next((row for row in status.stdout.splitlines() if row.startswith("serve ")), "")
        assert "running" in line and url in line and f"pid {proc.pid}" in line, status.stdout
        second = movie_platform_cli("serve", "--port", str(free_ports(1)[0]), env=env, timeout=60)
        assert second.returncode == 1 and f"serve already runs on {url} (pid {proc.pid})" in second.stderr, (
            second.stderr[-2000:]
        )
        down = movie_platform_cli("down", env=env)
        assert down.returncode == 0, down.stderr[-2000:]
        assert f"stopped serve (pid {proc.pid})" in down.stdout, down.stdout
        proc.wait(timeout=10)  # stopped by `down` itself, not by this fixture's cleanup
    status = movie_platform_cli("status", env=env)
    line = next((row for row in status.stdout.splitlines() if row.startswith("serve ")), "")
    assert "stopped" in line, status.stdout


def test_serve_and_predict_draw_no_progress_bars(server, stack_env, feast, tracking, tmp_path):
    """MLflow's tqdm "Downloading artifacts" bar came with every model serve and predict loaded."""
    url, _, log_file = server
    assert f"serving {tracking.registered_model} v" in log_file.read_text(), "serve downloaded a model"
    printed = log_file.read_text() + (log_file.parent / "serve.stdout").read_text()
    assert "Downloading artifacts" not in printed
    predicted = movie_platform_cli("predict", "1", env=serve_env(stack_env, feast, tracking, tmp_path / "stack"))
    assert predicted.returncode == 0 and "alias champion" in predicted.stdout, predicted.stderr[-2000:]
    assert "Downloading artifacts" not in predicted.stdout + predicted.stderr
