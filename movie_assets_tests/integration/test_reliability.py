"""Fault survival on real services: killed runs, a Redis outage, a dead PostgreSQL, TMDB misbehaving
in every way at once, bad input, secrets, and two backfills writing the same months at once."""

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from movie_assets.assets.features import feast_definitions, movie_features, online_features
from movie_assets.assets.ingest import movies_raw, movies_raw_backup
from movie_assets.assets.prepare import movies_clean
from movie_assets.domain.movie_records import validate_month
from movie_assets.object_layout import RAW_BACKUP_PATH
from movie_assets.resources.postgres import PostgresDatabase
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import TmdbSampleSource, movies_for_month
from movie_assets_tests.conftest import (
    SESSION_ENVIRON,
    TEST_PORTS,
    TEST_STATE_DIR,
    log_to_pytest,
    own_feast_project,
    platform_resources,
    s3_client,
    wait_for,
)
from movie_assets_tests.integration import partition_writer
from movie_assets_tests.tmdb_server import FakeTmdb, Faults, TmdbTestServer
from movie_platform.local_stack import REPO_ROOT, Stack

JAN = (dt.date(2024, 1, 1), dt.date(2024, 2, 1))


def count_by_month(database: PostgresDatabase, table: str) -> dict[str, tuple[int, int]]:
    """{month: (rows, distinct movie ids)}: duplicates show as rows > distinct ids."""
    query = sql.SQL("select release_month, count(*), count(distinct movie_id) from {} group by 1 order by 1").format(
        database.ident(table)
    )
    with database.connect() as conn:
        return {str(month): (rows, ids) for month, rows, ids in conn.execute(query)}


def failure_message(result) -> str:
    """The failed step's error with its causes (a retry policy wraps the asset's own error)."""
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.to_string()


# ---- 1. SIGKILL in the middle of a partition write ----------------------------------------------
def test_sigkill_mid_write_keeps_the_previous_rows_and_the_rerun_completes(database, stack_env):
    good = pd.DataFrame({"movie_id": [1, 2], "title": ["A", "B"], "release_month": [JAN[0]] * 2})
    database.replace_rows(partition_writer.TABLE, partition_writer.COLUMNS, good, "release_month", JAN)
    env = {**os.environ, "MOVIE_DB_URL": database.url, "MOVIE_DB_SCHEMA": database.db_schema}
    cmd = [sys.executable, "-m", "movie_assets_tests.integration.partition_writer", "2024-01-01", "3000000"]
    run = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    copying = wait_for_copy(database, run)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert copying and run.returncode == -signal.SIGKILL
    wait_for(lambda: not copy_backends(database), 30, "PostgreSQL to abort the killed run's COPY")
    assert count_by_month(database, partition_writer.TABLE) == {"2024-01-01": (2, 2)}, (
        "the previous rows must be intact"
    )

    rerun = subprocess.run([*cmd[:-1], "200000"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert count_by_month(database, partition_writer.TABLE) == {"2024-01-01": (200_000, 200_000)}


def copy_backends(database: PostgresDatabase) -> list[int]:
    with psycopg.connect(database.url, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "select pid from pg_stat_activity where query ilike 'copy %%' and query like %s",
                (f"%{database.db_schema}%",),
            )
        ]


def wait_for_copy(database: PostgresDatabase, run: subprocess.Popen) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if copy_backends(database):
            time.sleep(0.5)  # well inside the COPY: rows of the new partition are on their way
            return True
        time.sleep(0.05)
    pytest.fail(
        f"the run never reached its COPY (exit {run.poll()}): "
        f"{run.stderr.read().decode()[-2000:] if run.poll() is not None else ''}"
    )


# ---- 2. Redis stopped during online_features -----------------------------------------------------
@pytest.fixture
def own_redis(stack_env):
    """A Redis of this test's own (the project's stack with every other service external), to stop and start."""
    environ = {
        **SESSION_ENVIRON,
        "MOVIE_DB_URL": stack_env["MOVIE_DB_URL"],
        "MLFLOW_TRACKING_URI": stack_env["MLFLOW_TRACKING_URI"],
        "MOVIE_REDIS_PORT": str(int(TEST_PORTS["MOVIE_REDIS_PORT"]) + 1),
    }
    environ.pop("MOVIE_REDIS_URL", None)
    stack = Stack(TEST_STATE_DIR / "redis-outage", environ=environ)
    env = stack.up(log=log_to_pytest("redis"))
    yield stack, env["MOVIE_REDIS_URL"]
    stack.down(log=log_to_pytest("redis"))


def test_redis_outage_fails_online_features_clearly_and_the_retry_catches_up(
    own_redis, database, object_store, stack_env
):
    stack, redis_url = own_redis
    feast = own_feast_project(stack_env, object_store.storage_url, redis_url=redis_url)
    resources = {**platform_resources(database, object_store, TmdbSampleSource()), "feast": feast}
    tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-02-01"}
    assert dg.materialize(
        [movies_raw, movies_clean, movie_features],
        resources=resources,
        tags=tags,
        instance=dg.DagsterInstance.ephemeral(),
    ).success
    assert dg.materialize([feast_definitions], resources=resources, instance=dg.DagsterInstance.ephemeral()).success

    stack.down(log=log_to_pytest("redis"))  # Redis goes away
    failed = dg.materialize(
        [online_features], resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not failed.success
    message = failure_message(failed)
    assert "Redis (the Feast online store)" in message and "unreachable" in message and "MOVIE_REDIS_URL" in message

    stack.up(log=log_to_pytest("redis"))  # back, empty or not: the registry was not advanced
    retry = dg.materialize([online_features], resources=resources, instance=dg.DagsterInstance.ephemeral())
    with database.connect() as conn:
        features = conn.execute(sql.SQL("select count(*) from {}").format(database.ident("features"))).fetchone()[0]
    metadata = retry.asset_materializations_for_node("online_features")[0].metadata
    assert metadata["movies_written"].value == features > 200
    assert {c.check_name: c.passed for c in retry.get_asset_check_evaluations()} == {
        "online_keys_present": True,
        "online_matches_offline": True,
    }


# ---- 3. PostgreSQL unreachable -------------------------------------------------------------------
def test_unreachable_postgres_fails_the_run_clearly_at_once_and_writes_nothing(object_store):
    """A refused connection does not heal while the retry policy waits (20 s, then 40 s): one attempt, in seconds."""
    dead = PostgresDatabase(url="postgresql://movie:hunter2@127.0.0.1:9/movies")
    started = time.monotonic()
    result = dg.materialize(
        [movies_raw, movies_raw_backup],
        resources=platform_resources(dead, object_store, TmdbSampleSource()),
        partition_key="2024-01-01",
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert time.monotonic() - started < 15
    assert not [e for e in result.all_events if e.event_type_value in ("STEP_UP_FOR_RETRY", "STEP_RESTARTED")]
    message = failure_message(result)
    assert "PostgreSQL at postgresql://movie:***@127.0.0.1:9/movies is unreachable" in message
    assert "2024-01-01..2024-02-01" in message and "MOVIE_DB_URL" in message and "nothing was written" in message
    assert "hunter2" not in message
    assert not object_store.path_for(RAW_BACKUP_PATH, "2024-01-01").exists(), "no backup of a month that was not stored"
    assert not result.asset_materializations_for_node("movies_raw")


# ---- 4. TMDB misbehaving in every way at once ----------------------------------------------------
def mangled(movies, every: int) -> tuple[list, set[int]]:
    """Every `every`th movie with a vote_count that is not a number, in the list item and the details."""
    out, bad = [], set()
    for i, movie in enumerate(movies):
        if i % every == every - 1:
            movie = type(movie)({**movie.list_item, "vote_count": "lots"}, {**movie.details, "vote_count": "lots"})
            bad.add(movie.details["id"])
        out.append(movie)
    return out, bad


def test_tmdb_faults_all_at_once_store_every_valid_movie_once_and_reject_the_malformed(
    database, object_store, monkeypatch
):
    months = ["2024-01-01", "2024-02-01"]
    movies, malformed = mangled(
        [m for key in months for m in movies_for_month(dt.date.fromisoformat(key))], every=20
    )  # 5%
    faults = Faults(
        error_every=10,
        error_attempts=1,  # 10% of requests answer 5xx first
        max_requests_per_second=40,
        throttle_every=25,
        retry_after_s=0,  # a real limit, plus stray 429s
        duplicate_every_page=2,
        latency_s=0.03,
    )  # items repeated across pages, slow answers
    monkeypatch.setenv("TMDB_API_KEY", "faults-key")
    with TmdbTestServer(FakeTmdb(movies, api_key="faults-key", faults=faults)) as server:
        tmdb = TmdbApiClient(base_url=server.base_url, api_key=dg.EnvVar("TMDB_API_KEY"), backoff_base_s=0.01)
        tags = {"dagster/asset_partition_range_start": months[0], "dagster/asset_partition_range_end": months[1]}
        result = dg.materialize(
            [movies_raw],
            resources=platform_resources(database, object_store, tmdb),
            tags=tags,
            instance=dg.DagsterInstance.ephemeral(),
        )
        served = dict(server.fake.requests)
    assert result.success
    assert served["5xx"] > 0 and served["429"] > 0
    now = dt.datetime.now(dt.timezone.utc)
    valid = set()
    for key in months:
        start = dt.date.fromisoformat(key)
        month_movies = [(m.list_item, m.details) for m in movies if m.details["release_date"].startswith(key[:7])]
        valid |= {
            r["movie_id"]
            for r in validate_month(month_movies, (start, (start + dt.timedelta(days=32)).replace(day=1)), now).rows
        }
    assert malformed and not malformed & valid
    with database.connect() as conn:
        stored = [r[0] for r in conn.execute(sql.SQL("select movie_id from {}").format(database.ident("movies_raw")))]
        rejects = dict(
            conn.execute(
                sql.SQL("select movie_id, reason from {}").format(database.ident("movies_rejected"))
            ).fetchall()
        )
    assert len(stored) == len(set(stored)), "a movie stored twice"
    assert set(stored) == valid
    assert malformed <= set(rejects)
    assert all("vote_count is not a number" in rejects[i] for i in malformed)


# ---- 5. Bad input: one clear message, nothing written --------------------------------------------
def test_an_invalid_partition_key_is_refused_before_anything_runs(database, object_store):
    with pytest.raises(dg.DagsterUnknownPartitionError, match=r"Could not find a partition with key `2024-13-01`"):
        dg.materialize(
            [movies_raw],
            resources=platform_resources(database, object_store, TmdbSampleSource()),
            partition_key="2024-13-01",
            instance=dg.DagsterInstance.ephemeral(),
        )
    assert not table_exists(database, "movies_raw")


def test_a_negative_hyperparameter_fails_before_training(database, object_store, stack_env):
    from movie_assets.assets.training import movie_rating_model
    from movie_assets.resources.mlflow import MlflowTracking

    tracking = MlflowTracking(tracking_uri=stack_env["MLFLOW_TRACKING_URI"])
    feast = own_feast_project(stack_env, object_store.storage_url)
    resources = {
        **platform_resources(database, object_store, TmdbSampleSource()),
        "feast": feast,
        "mlflow_tracking": tracking,
    }
    runs_before = mlflow_run_count(tracking)
    result = dg.materialize(
        [movies_raw, movies_clean, movie_rating_model],
        selection=[movie_rating_model],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        run_config={"ops": {"movie_rating_model": {"config": {"n_estimators": -5}}}},
    )
    assert not result.success
    message = failure_message(result)
    assert "n_estimators" in message and "greater than 0" in message
    assert mlflow_run_count(tracking) == runs_before, "no MLflow run for a config that cannot train"


def mlflow_run_count(tracking) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments, max_results=50_000)) if experiments else 0


def test_an_unknown_tmdb_source_names_the_variable_and_the_choices():
    from movie_assets.resources.wiring import build_resources
    from movie_assets.settings import Settings

    with pytest.raises(ValueError) as error:
        build_resources(Settings.from_env({**os.environ, "TMDB_SOURCE": "imdb"}))
    assert str(error.value) == "TMDB_SOURCE must be `api` or `sample`, not 'imdb'"


def test_a_missing_bucket_is_named_and_nothing_is_written(s3_stack_env):
    from dagster_aws.s3 import S3Resource

    from movie_assets.resources.object_store import ObjectStore, ObjectStoreError

    s3 = S3Resource(
        endpoint_url=s3_stack_env["MOVIE_S3_ENDPOINT_URL"],
        aws_access_key_id=s3_stack_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_stack_env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3_stack_env["AWS_DEFAULT_REGION"],
    )
    store = ObjectStore(storage_url="s3://no-such-bucket-here/platform", s3=s3)
    with pytest.raises(ObjectStoreError) as error:
        store.write(RAW_BACKUP_PATH, "2024-01-01", b"data")
    message = str(error.value)
    assert "bucket 'no-such-bucket-here' does not exist" in message and "MOVIE_STORAGE_URL" in message
    assert "nothing was written" in message

    client = s3_client(s3_stack_env)
    assert "no-such-bucket-here" not in [b["Name"] for b in client.list_buckets()["Buckets"]], (
        "no bucket created by a write"
    )


@pytest.fixture
def s3_with_auth():
    """An S3 API server that checks signatures (moto enforces IAM after its first 3 calls), with one user and bucket."""
    import json

    import boto3

    from movie_platform.local_stack import _port_open, _terminate

    port = int(TEST_PORTS["MOVIE_S3_PORT"]) + 100
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _port_open(port), 60, "the S3 API server")
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam", endpoint_url=url, aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1"
        )
        iam.create_user(UserName="platform")
        key = iam.create_access_key(UserName="platform")["AccessKey"]
        iam.put_user_policy(
            UserName="platform",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        ).create_bucket(Bucket="auth-bucket")
        yield url, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        _terminate(proc.pid)


def test_a_wrong_s3_secret_is_refused_with_the_key_id_not_the_secret(s3_with_auth):
    from dagster_aws.s3 import S3Resource

    from movie_assets.resources.object_store import ObjectStore, ObjectStoreError

    url, key_id, secret = s3_with_auth

    def store(secret_key: str) -> ObjectStore:
        return ObjectStore(
            storage_url="s3://auth-bucket/platform",
            s3=S3Resource(
                endpoint_url=url, aws_access_key_id=key_id, aws_secret_access_key=secret_key, region_name="us-east-1"
            ),
        )

    with pytest.raises(ObjectStoreError) as error:
        store("wrong-secret-123").write(RAW_BACKUP_PATH, "2024-01-01", b"data")
    message = str(error.value)
    assert f"refused the credentials of AWS_ACCESS_KEY_ID={key_id}" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "wrong-secret-123" not in message and "nothing was written" in message
    assert not store(secret).path_for(RAW_BACKUP_PATH, "2024-01-01").exists()
    assert store(secret).write(RAW_BACKUP_PATH, "2024-01-01", b"data").exists(), "the right secret is accepted"


def table_exists(database: PostgresDatabase, table: str) -> bool:
    with database.connect() as conn:
        return conn.execute("select to_regclass(%s) is not null", (f'"{database.db_schema}"."{table}"',)).fetchone()[0]


# ---- 7. Two backfills over the same months at once -----------------------------------------------
def test_overlapping_writers_leave_each_month_written_exactly_once(database):
    """A big Jan-Mar write is mid-COPY when a small Feb-Apr write starts: the second waits, then
    replaces Feb and Mar. Without the month locks both DELETEs run first and Feb/Mar end up twice."""
    columns = partition_writer.COLUMNS
    months = [dt.date(2024, m, 1) for m in (1, 2, 3, 4)]
    first = pd.DataFrame(
        {"movie_id": range(900_000), "title": "first", "release_month": [months[i % 3] for i in range(900_000)]}
    )
    second = pd.DataFrame(
        {"movie_id": range(3_000), "title": "second", "release_month": [months[1 + i % 3] for i in range(3_000)]}
    )
    database.replace_rows(
        partition_writer.TABLE, columns, first.head(0), "release_month", (months[0], months[3])
    )  # table exists
    errors = []

    def write(frame, window):
        try:
            database.replace_rows(partition_writer.TABLE, columns, frame, "release_month", window)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    big = threading.Thread(target=write, args=(first, (months[0], months[3])))
    big.start()
    wait_for(lambda: copy_backends(database), 60, "the first writer's COPY")
    small = threading.Thread(target=write, args=(second, (months[1], dt.date(2024, 5, 1))))
    small.start()
    big.join(120)
    small.join(120)
    assert not errors, errors
    counts = count_by_month(database, partition_writer.TABLE)
    assert counts == {
        "2024-01-01": (300_000, 300_000),
        "2024-02-01": (1_000, 1_000),
        "2024-03-01": (1_000, 1_000),
        "2024-04-01": (1_000, 1_000),
    }, counts
