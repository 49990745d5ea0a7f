"""The embedded stack runs real servers: each one is used the way the platform uses it."""

from __future__ import annotations

import time
import uuid

import mlflow
import psycopg
import pytest
import redis
from mlflow.tracking import MlflowClient

from movie_assets_tests.conftest import s3_client
from movie_platform.local_stack import _alive


def test_postgres_sql_round_trip(stack_env):
    table = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack_env["MOVIE_DB_URL"]) as conn:
        conn.execute(f"create table {table} (movie_id bigint primary key, title text, released date)")
        conn.execute(
            f"insert into {table} values (550, 'Fight Club', '1999-10-15'), (13, 'Forrest Gump', '1994-06-23')"
        )
        rows = conn.execute(f"select title from {table} where released > '1995-01-01' order by movie_id").fetchall()
        version = conn.execute("show server_version_num").fetchone()[0]
        conn.execute(f"drop table {table}")
    assert rows == [("Fight Club",)]
    assert int(version) >= 160000, "the embedded PostgreSQL should be a real PostgreSQL 16"


def test_redis_set_get_with_ttl(stack_env):
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    key = f"test:{uuid.uuid4().hex}"
    client.set(key, "Dune", px=1500)
    assert client.get(key) == b"Dune"
    assert 0 < client.pttl(key) <= 1500
    time.sleep(1.7)
    assert client.get(key) is None, "the key should have expired with its TTL"


def test_s3_put_get_through_boto3(s3_stack_env):
    s3 = s3_client(s3_stack_env)
    bucket = s3_stack_env["MOVIE_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    key = f"tests/{uuid.uuid4().hex}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"id": 550}')
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b'{"id": 550}'
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="tests/")["Contents"]]
    assert key in listed


def log_run_with_model(tracking_uri: str, tmp_path) -> tuple[str, str]:
    """Log a run with an artifact and a registered model; return (run_id, model name)."""
    from sklearn.linear_model import LinearRegression

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("stack_smoke")
    name = f"smoke_{uuid.uuid4().hex[:8]}"
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("rmse", 1.25)
        note = tmp_path / "note.txt"
        note.write_text("kept across restarts")
        mlflow.log_artifact(str(note))
        model = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.0])
        mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
    return run.info.run_id, name


def assert_run_readable(tracking_uri: str, run_id: str, name: str, tmp_path) -> None:
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.data.params["alpha"] == "0.5"
    assert run.data.metrics["rmse"] == 1.25
    local = client.download_artifacts(run_id, "note.txt", str(tmp_path))
    assert open(local).read() == "kept across restarts"
    (version,) = client.search_model_versions(f"name = '{name}'")
    (tmp_path / "model").mkdir(parents=True)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}", dst_path=str(tmp_path / "model"))
    assert model.predict([[3.0]])[0] == pytest.approx(3.0)


def test_mlflow_run_artifact_and_registry(stack_env, tmp_path):
    run_id, name = log_run_with_model(stack_env["MLFLOW_TRACKING_URI"], tmp_path)
    assert_run_readable(stack_env["MLFLOW_TRACKING_URI"], run_id, name, tmp_path / "read")


def test_mlflow_artifacts_land_in_s3(s3_stack_env, tmp_path):
    """With `up --with-s3` the tracking server keeps artifacts in the S3 bucket."""
    run_id, name = log_run_with_model(s3_stack_env["MLFLOW_TRACKING_URI"], tmp_path)
    assert_run_readable(s3_stack_env["MLFLOW_TRACKING_URI"], run_id, name, tmp_path / "read")
    s3 = s3_client(s3_stack_env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="movie-platform", Prefix="mlflow/")["Contents"]]
    assert any(k.endswith(f"{run_id}/artifacts/note.txt") for k in keys), keys[:5]


def test_nothing_lost_across_down_and_up(test_stack, stack_env, tmp_path):
    tracking_uri = stack_env["MLFLOW_TRACKING_URI"]
    run_id, name = log_run_with_model(tracking_uri, tmp_path)
    key = f"test:restart:{uuid.uuid4().hex}"
    redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"]).set(key, "kept", ex=3600)
    with psycopg.connect(stack_env["MOVIE_DB_URL"]) as conn:
        conn.execute("create table if not exists restart_probe (k text primary key)")
        conn.execute("insert into restart_probe values (%s)", (key,))

    old_pids = {row["name"]: row["pid"] for row in test_stack.status()}
    test_stack.down(log=print)
    assert not any(_alive(pid) for pid in old_pids.values()), "down must stop every process it started"
    env = test_stack.up(log=print)
    assert env == stack_env, "the stack must come back on the same URLs"

    assert redis.Redis.from_url(env["MOVIE_REDIS_URL"]).get(key) == b"kept"
    with psycopg.connect(env["MOVIE_DB_URL"]) as conn:
        assert conn.execute("select count(*) from restart_probe where k = %s", (key,)).fetchone()[0] == 1
        conn.execute("drop table restart_probe")
    assert_run_readable(tracking_uri, run_id, name, tmp_path / "after")
