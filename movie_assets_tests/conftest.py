"""Session fixtures: one embedded stack for the whole run (or the external services the env names).

The test stack lives in its own state folder and on its own ports, so `make test`
never touches a developer's `make dev` stack. It is stopped at the end of the
session if the session started it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from movie_assets.local_stack import REPO_ROOT, Stack

TEST_STATE_DIR = REPO_ROOT / ".movie_platform" / "test-stack"
# Below the ephemeral port range, like the defaults, and apart from them.
TEST_PORTS = {"MOVIE_PG_PORT": "25432", "MOVIE_REDIS_PORT": "26379", "MOVIE_MLFLOW_PORT": "25000", "MOVIE_S3_PORT": "29000"}
# The environment as the session found it: what it names is external, the rest is embedded.
SESSION_ENVIRON = {**TEST_PORTS, **os.environ}


def log_to_pytest(prefix: str):
    return lambda msg: print(f"[{prefix}] {msg}")


@pytest.fixture(scope="session")
def test_stack() -> Stack:
    return Stack(TEST_STATE_DIR, environ=SESSION_ENVIRON)


@pytest.fixture(scope="session")
def stack_env(test_stack: Stack):
    """Env of the running test stack, exported into os.environ for the code under test."""
    env = test_stack.up(log=log_to_pytest("stack"))
    os.environ.update(env)
    yield env
    if not os.environ.get("MOVIE_KEEP_TEST_STACK"):
        test_stack.down(log=log_to_pytest("stack"))


@pytest.fixture(scope="session")
def s3_stack(stack_env) -> Stack:
    """A second stack in S3 mode: the S3 API server plus an MLflow server whose artifacts go to S3.

    It takes the session's PostgreSQL and Redis as external services, so it also
    exercises `up --with-s3` and the external-service path of `up`.
    """
    environ = {
        **{k: v for k, v in SESSION_ENVIRON.items() if k != "MOVIE_STORAGE_URL"},
        "MOVIE_DB_URL": stack_env["MOVIE_DB_URL"],
        "MOVIE_REDIS_URL": stack_env["MOVIE_REDIS_URL"],
        "MOVIE_MLFLOW_PORT": str(int(TEST_PORTS["MOVIE_MLFLOW_PORT"]) + 1),
    }
    return Stack(TEST_STATE_DIR / "s3", environ=environ)


@pytest.fixture(scope="session")
def s3_stack_env(s3_stack: Stack):
    env = s3_stack.up(with_s3=True, log=log_to_pytest("s3 stack"))
    yield env
    s3_stack.down(log=log_to_pytest("s3 stack"))


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
