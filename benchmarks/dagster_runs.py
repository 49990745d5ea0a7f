"""What the benchmarks that launch real Dagster runs share: a scratch instance and schema, the CLI, memory.

Each launched run gets its own PostgreSQL schema, object-store folder and Dagster instance database
(as `movie-platform up` writes it), dropped afterwards, so rounds cannot see each other's months.
The command is `dg launch` (the CLI twin of a UI backfill, no daemon), and the process tree's memory
is sampled while it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from movie_platform.dagster_home import write_dagster_home
from movie_platform.local_stack import REPO_ROOT, Stack


def stack_env() -> dict[str, str]:
    """The default embedded stack's variables, exported here too (the instances' dagster.yaml read the password)."""
    env = Stack().env()
    if not env.get("MOVIE_DB_URL"):
        raise SystemExit("start the embedded stack first: .venv/bin/movie-platform up")
    os.environ.update(env)
    return env


@dataclass(frozen=True)
class Scratch:
    """One run's own schema, folder and instance (DAGSTER_HOME), and the environment that points at them."""

    name: str
    home: Path
    env: dict[str, str]


@contextlib.contextmanager
def scratch_instance(stack: dict[str, str], root: Path, prefix: str, **variables: str) -> Iterator[Scratch]:
    """A fresh instance database, schema and folder under `root`, dropped on exit; `variables` join the env."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    db_url = stack["MOVIE_DB_URL"]
    home, folder = root / name / "dagster_home", root / name / "objects"
    folder.mkdir(parents=True)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    write_dagster_home(home, db_url, database=name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "DAGSTER_", "TMDB_"))}
    env.update(stack, DAGSTER_HOME=str(home), MOVIE_DB_SCHEMA=name, MOVIE_STORAGE_URL=folder.as_uri(), **variables)
    try:
        yield Scratch(name, home, env)
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def dg_launch(assets: str, first: str, last: str, run_config: dict | None = None) -> list[str]:
    """`dg launch -m movie_assets --assets ... --partition-range first...last`, as the README teaches it."""
    command = [str(Path(sys.executable).with_name("dg")), "launch", "-m", "movie_assets"]
    command += ["--assets", assets, "--partition-range", f"{first}...{last}"]
    return command + (["--config-json", json.dumps(run_config)] if run_config else [])


@dataclass
class MemoryPeaks:
    """The peaks of RSS and PSS summed over a process and its descendants (PSS counts a shared page once)."""

    rss: int = 0
    pss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, root: int, every_s: float = 0.05) -> threading.Thread:
        thread = threading.Thread(target=self._sample, args=(root, every_s), daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _sample(self, root: int, every_s: float) -> None:
        while not self._stop.is_set():
            rss = pss = 0
            try:
                processes = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    full = process.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + full.rss, pss + full.pss
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self._stop.wait(every_s)


def start(command: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, MemoryPeaks]:
    """`command` in its own process group (so this benchmark may kill what it started), its memory watched."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    peaks = MemoryPeaks()
    peaks.watch(process.pid)
    return process, peaks
