"""The embedded stack lets no one in without its passwords, and keeps them out of argv and shared files."""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import quote, unquote, urlsplit

import psutil
import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from movie_platform.stack_secrets import SPECIAL, secrets_file


def _pg(url: str) -> dict:
    parts = urlsplit(url)
    return {"host": parts.hostname, "port": parts.port, "user": parts.username, "dbname": "movies"}


def test_postgres_refuses_a_connection_without_the_password_or_with_a_wrong_one(stack_env, test_stack):
    target = _pg(stack_env["MOVIE_DB_URL"])
    socket_dir = str(test_stack.state_dir / "pg_socket")
    for attempt in ({}, {"password": "wrong"}, {"host": socket_dir}):  # TCP and the local socket: no trust rule
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(**{**target, **attempt}, connect_timeout=5).close()
    with psycopg.connect(stack_env["MOVIE_DB_URL"], connect_timeout=5) as conn:
        (method,) = conn.execute("select current_setting('password_encryption')").fetchone()
        rules = conn.execute("select distinct auth_method from pg_hba_file_rules").fetchall()
    assert method == "scram-sha-256" and rules == [("scram-sha-256",)]


def test_redis_refuses_commands_without_auth_or_with_a_wrong_password(stack_env):
    parts = urlsplit(stack_env["MOVIE_REDIS_URL"])
    target = {"host": parts.hostname, "port": parts.port, "socket_timeout": 5, "retry": Retry(NoBackoff(), 0)}
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):  # Redis' NOAUTH
        redis.Redis(**target).get("x")
    with pytest.raises(redis.AuthenticationError, match="invalid username-password"):  # Redis' WRONGPASS
        redis.Redis(**target, password="wrong").get("x")
    assert redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"], socket_timeout=5).ping()


def test_the_passwords_hold_url_special_characters_and_stay_in_owner_only_files(stack_env, test_stack):
    """Every test then runs through the encoding paths of every client with `@ : / % ,` in both passwords."""
    stored = json.loads(secrets_file(test_stack.state_dir).read_text())
    for name, url_var in (("postgres", "MOVIE_DB_URL"), ("redis", "MOVIE_REDIS_URL")):
        password = stored[name]
        assert set(SPECIAL) <= set(password), name
        assert unquote(urlsplit(stack_env[url_var]).password or "") == password, url_var
    for path in (secrets_file(test_stack.state_dir), test_stack.state_file, test_stack.state_dir / "redis.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # ps shows every process's argv to every local user: no password in the stack's command lines.
    for row in test_stack.status():
        if not row.get("pid") or not row["running"]:
            continue
        proc = psutil.Process(row["pid"])
        for each in (proc, *proc.children(recursive=True)):
            argv = " ".join(each.cmdline())
            assert not any(p in argv or quote(p, safe="") in argv for p in stored.values()), row["name"]
    dagster_yaml = (test_stack.dagster_home / "dagster.yaml").read_text()
    assert "env: MOVIE_DAGSTER_PG_PASSWORD" in dagster_yaml
    assert not any(p in dagster_yaml or quote(p, safe="") in dagster_yaml for p in stored.values())


def test_an_old_trusting_data_directory_is_upgraded_on_up_and_rotation_keeps_the_data(stack_env):
    """What older versions created (initdb --auth=trust, a role without password) gets the password and scram;
    then `rotate-secrets` swaps both passwords on the running stack: the old ones stop working, data stays."""
    import shutil
    import uuid

    from movie_assets_tests.conftest import SESSION_ENVIRON
    from movie_assets_tests.integration.test_stack_ownership import free_ports
    from movie_platform.local_stack import REPO_ROOT, Stack

    pg_port, redis_port = free_ports(2)
    environ = {k: v for k, v in SESSION_ENVIRON.items() if k not in ("MOVIE_DB_URL", "MOVIE_REDIS_URL")}
    environ.update(
        MOVIE_PG_PORT=str(pg_port),
        MOVIE_REDIS_PORT=str(redis_port),
        MLFLOW_TRACKING_URI=stack_env["MLFLOW_TRACKING_URI"],
    )
    stack = Stack(REPO_ROOT / ".movie_platform" / f"own-{uuid.uuid4().hex[:8]}", environ=environ)
    quiet = lambda _msg: None  # noqa: E731
    try:
        url = stack.up(log=quiet)["MOVIE_DB_URL"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table kept as select 42 as answer")
            conn.execute("alter role postgres password null")
        stack.down(log=quiet)
        hba = stack.state_dir / "postgres" / "pg_hba.conf"
        hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))  # the old data directory

        said: list[str] = []
        env = stack.up(log=said.append)
        assert env["MOVIE_DB_URL"] == url
        assert any("trusted local connections" in line and "data kept" in line for line in said), said
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(**_pg(url), connect_timeout=5).close()
        with psycopg.connect(url) as conn:
            assert conn.execute("select answer from kept").fetchone() == (42,)
            rules = conn.execute("select distinct auth_method from pg_hba_file_rules").fetchall()
        assert rules == [("scram-sha-256",)]

        redis.Redis.from_url(env["MOVIE_REDIS_URL"]).set("kept", "yes")
        rotated = stack.rotate_secrets(log=quiet)
        assert rotated["MOVIE_DB_URL"] != url and rotated["MOVIE_REDIS_URL"] != env["MOVIE_REDIS_URL"]
        assert stack.env() == rotated
        with psycopg.connect(rotated["MOVIE_DB_URL"]) as conn:
            assert conn.execute("select answer from kept").fetchone() == (42,)
        assert redis.Redis.from_url(rotated["MOVIE_REDIS_URL"]).get("kept") == b"yes"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url, connect_timeout=5).close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(env["MOVIE_REDIS_URL"], retry=Retry(NoBackoff(), 0)).ping()
    finally:
        stack.down(log=quiet)
        shutil.rmtree(stack.state_dir, ignore_errors=True)


def test_passwords_with_url_special_characters_work_from_crawl_to_online_read(
    database, object_store, stack_env, test_stack
):
    """`@ : / % ,` in both passwords: crawl from the fake TMDB server, PostgreSQL IO manager, Feast's SQL registry,
    our Redis writer, then online reads through our reader and through Feast's own SDK."""
    import datetime as dt

    import dagster as dg
    import numpy as np

    from movie_assets.assets.features import feast_definitions, movie_features, online_features
    from movie_assets.assets.ingest import movies_raw
    from movie_assets.assets.prepare import movies_clean
    from movie_assets.resources.online_writer import OnlineReader
    from movie_assets.resources.tmdb import TmdbApiClient
    from movie_assets.resources.tmdb_sample import movies_for_month
    from movie_assets_tests.conftest import own_feast_project, platform_resources
    from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer

    stored = json.loads(secrets_file(test_stack.state_dir).read_text())
    assert all(set(SPECIAL) <= set(password) for password in stored.values())
    assert stack_env["MOVIE_REDIS_URL"].startswith(f"redis://:{quote(stored['redis'], safe='')}@")
    month = dt.date(2024, 3, 1)
    with TmdbTestServer(FakeTmdb(movies_for_month(month))) as server:
        tmdb = TmdbApiClient(base_url=server.base_url, api_key="test-key", requests_per_second=500)
        feast = own_feast_project(stack_env, object_store.storage_url)
        resources = {**platform_resources(database, object_store, tmdb), "feast": feast}
        instance = dg.DagsterInstance.ephemeral()
        crawl = [movies_raw, movies_clean, movie_features]
        assert dg.materialize(crawl, resources=resources, partition_key=str(month), instance=instance).success
        assert dg.materialize([feast_definitions, online_features], resources=resources, instance=instance).success
    store = feast.store()
    view = store.get_feature_view("movie_features")
    reader = OnlineReader(store, view)
    ids = reader.stored_ids()
    assert len(ids) > 50
    ours = reader.read(ids[:20])
    sdk = store.get_online_features(
        features=[f"movie_features:{f.name}" for f in view.features], entity_rows=[{"movie_id": i} for i in ids[:20]]
    ).to_df()
    columns = list(ours.columns)
    assert ours["log_vote_count"].notna().all(), "the reader found the movies"
    np.testing.assert_allclose(
        ours.loc[ids[:20], columns].to_numpy(float),
        sdk.set_index("movie_id").loc[ids[:20], columns].to_numpy(float),
        equal_nan=True,
    )


def test_doctor_says_which_credentials_are_refused_without_quoting_them(stack_env):
    from movie_assets_tests.conftest import movie_platform_cli

    wrong = "Wr0ng:p@ss/%,"
    env = {
        **os.environ,
        **stack_env,
        "MOVIE_DB_URL": _with_password(stack_env["MOVIE_DB_URL"], wrong),
        "MOVIE_REDIS_URL": _with_password(stack_env["MOVIE_REDIS_URL"], wrong),
    }
    result = movie_platform_cli("doctor", env=env, timeout=120)
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if len(line.split()) > 1}
    assert result.returncode == 1, result.stdout + result.stderr
    for service, var in (("postgres", "MOVIE_DB_URL"), ("redis", "MOVIE_REDIS_URL")):
        assert lines[service].startswith("FAIL") and f"refuses the credentials in {var}" in lines[service], lines
    output = result.stdout + result.stderr
    assert wrong not in output and quote(wrong, safe="") not in output


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", f":{quote(password, safe='')}@")
