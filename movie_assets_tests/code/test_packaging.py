"""The pinned Dagster release train is what is installed, and the code location loads."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

DAGSTER_LIBS = ["dagster-postgres", "dagster-aws", "dagster-mlflow", "dagster-airlift"]


def test_dagster_release_train_is_pinned():
    assert version("dagster") == "1.13.27"
    assert version("dagster-webserver") == "1.13.27"
    for lib in DAGSTER_LIBS:
        assert version(lib) == "0.29.27", lib


@pytest.mark.parametrize("package,major", [("mlflow", "3"), ("psycopg", "3")])
def test_major_versions(package, major):
    assert version(package).split(".")[0] == major


def test_redis_client_is_one_feast_accepts():
    assert int(version("redis").split(".")[0]) < 8


def test_definitions_validate(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-m", "movie_assets"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(Path(sys.executable).parent), "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_progress_logs_rate_and_eta():
    from movie_assets.domain.progress import Progress

    lines = []
    progress = Progress("details", 4, lines.append, every_s=0)
    for _ in range(4):
        progress.advance()
    assert len(lines) == 4 and lines[-1].startswith("details: 4/4 (") and "ETA 0s" in lines[-1]
