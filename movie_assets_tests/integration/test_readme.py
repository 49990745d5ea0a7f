"""The README's commands exist and its SQL and Feast CLI snippets run against the stack the demo filled."""

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from movie_assets.resources.feast import feast_env
from movie_platform.cli import build_parser
from movie_platform.local_stack import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def commands(pattern: str) -> set[str]:
    return {m for language, body in BLOCKS if language == "bash" for m in re.findall(pattern, body)} | set(
        re.findall(pattern, README)
    )


def test_every_movie_platform_subcommand_in_the_readme_exists():
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices)  # argparse keeps subcommands here
    used = commands(r"movie-platform ([\w-]*\w)")  # subcommands may have hyphens (rotate-secrets)
    assert used and used <= known, used - known


def test_every_make_target_in_the_readme_exists():
    rules = re.findall(r"^([\w -]+):", (REPO_ROOT / "Makefile").read_text(), flags=re.M)
    targets = {target for rule in rules for target in rule.split()}
    used = commands(r"\bmake ([\w-]+)")
    assert {"demo", "test", "dev", "down"} <= used <= targets, used - targets


def test_sql_snippets_run_on_the_demo_data(demo_run, stack_env):
    assert demo_run.returncode == 0
    statements = [
        s.strip()
        for language, body in BLOCKS
        if language == "sql"
        for s in re.sub(r"--[^\n]*", "", body).split(";")
        if s.strip()
    ]
    assert len(statements) >= 3
    with psycopg.connect(stack_env["MOVIE_DB_URL"]) as conn:
        for statement in statements:
            rows = conn.execute(statement).fetchall()
            assert rows, statement


def test_feast_cli_snippets_run_in_feature_repo(demo_run, stack_env, test_stack):
    assert demo_run.returncode == 0
    env = {**os.environ, **stack_env, **feast_env(stack_env)}
    feast = str(Path(sys.executable).with_name("feast"))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    for args in (["feature-views", "list"], ["apply"], ["materialize-incremental", now], ["feature-services", "list"]):
        result = subprocess.run(
            [feast, *args], cwd=REPO_ROOT / "feature_repo", env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (args, result.stderr[-2000:])
    assert "movie_rating_v1" in result.stdout
