"""The pinned Dagster release train is what is installed, and the code location loads."""

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGSTER_LIBS = ["dagster-postgres", "dagster-aws", "dagster-airlift"]


def test_dagster_release_train_is_pinned():
    assert version("dagster") == "1.13.27"
    assert version("dagster-webserver") == "1.13.27"
    for lib in DAGSTER_LIBS:
        assert version(lib) == "0.29.27", lib


def test_every_declared_dagster_library_is_imported_by_the_platform():
    """A pinned library nobody imports is weight and a false promise (dagster-mlflow was, issue 28)."""
    setup_py = (REPO / "setup.py").read_text()
    sources = "\n".join(
        p.read_text() for folder in ("movie_assets", "movie_platform") for p in (REPO / folder).rglob("*.py")
    )
    declared = {name for name in re.findall(r'f"(dagster-[a-z]+)==\{DAGSTER_LIBS\}"', setup_py)}
    assert declared == set(DAGSTER_LIBS), declared
    # dagster-postgres is loaded by Dagster itself, for the instance storage that dagster.yaml declares.
    assert "postgres_db:" in (REPO / "movie_platform" / "dagster_home.py").read_text()
    for library in declared - {"dagster-postgres"}:
        module = library.replace("-", "_")
        assert f"import {module}" in sources or f"from {module}" in sources, f"{library} is declared, never imported"


@pytest.mark.parametrize("package,major", [("mlflow", "3"), ("psycopg", "3")])
def test_major_versions(package, major):
    assert version(package).split(".")[0] == major


def test_redis_client_is_one_feast_accepts():
    assert int(version("redis").split(".")[0]) < 8


def _quiet_home(tmp_path: Path) -> dict[str, str]:
    """A bare environment with its own DAGSTER_HOME (an empty dagster.yaml, telemetry off)."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {"PATH": str(Path(sys.executable).parent), "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)}


def _run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    executable = str(Path(sys.executable).with_name(command[0]))
    return subprocess.run(
        [executable, *command[1:]], capture_output=True, text=True, timeout=300, cwd=REPO, env=_quiet_home(tmp_path)
    )


def test_definitions_validate(tmp_path):
    result = _run(["dagster", "definitions", "validate", "-m", "movie_assets"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_dg_knows_the_project(tmp_path):
    """`dg check defs` and `dg list defs` load the code location from pyproject.toml's [tool.dg]."""
    checked = _run(["dg", "check", "defs"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = _run(["dg", "list", "defs", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    defs = json.loads(listed.stdout)
    assets = {asset["asset_key"] for asset in defs["assets"]}
    assert {"movies_raw", "movie_features", "online_features", "movie_rating_model"} <= assets, assets
    assert {job["name"] for job in defs["jobs"]} >= {"restore_movies_raw_from_backup", "movie_rating_sweep"}


def test_progress_logs_rate_and_eta():
    from movie_assets.domain.progress import Progress

    lines = []
    progress = Progress("details", 4, lines.append, every_s=0)
    for _ in range(4):
        progress.advance()
    assert len(lines) == 4 and lines[-1].startswith("details: 4/4 (") and "ETA 0s" in lines[-1]


def test_progress_past_an_estimate_says_eta_0s_and_reads_hours():
    from movie_assets.domain.progress import Progress, duration

    lines = []
    progress = Progress("requests", 3, lines.append, every_s=0)
    progress.advance(5)  # retries: more requests than estimated
    assert progress.eta_s() == 0 and lines[-1].startswith("requests: 5/3 (") and "ETA 0s" in lines[-1]
    assert [duration(s) for s in (12.4, 185, 27_650)] == ["12s", "3m05s", "7h40m"]
