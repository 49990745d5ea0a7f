"""What the browser tests share: `dagster dev` on an instance of the test's own, a Chromium page, named steps."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from movie_assets_tests.conftest import free_port, stop_process_group
from movie_platform.browser import dismiss_welcome, launch_chromium, start_dagster_ui
from movie_platform.local_stack import tail


def dagster_dev_env(home: Path, database, object_store, **overrides: str) -> dict[str, str]:
    """The test's instance, schema and store, the sample as TMDB, and no sync or retraining of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "DAGSTER_", "TMDB_"))}
    env.update(
        DAGSTER_HOME=str(home),
        MOVIE_DB_URL=database.url,
        MOVIE_DB_SCHEMA=database.db_schema,
        MOVIE_STORAGE_URL=object_store.storage_url,
        TMDB_SOURCE="sample",
        MOVIE_SYNC_INTERVAL_SECONDS="off",
        MOVIE_RETRAIN_SHARE="off",
        **overrides,
    )
    return env


@contextlib.contextmanager
def running_dagster_dev(env: dict[str, str], home: Path, tmp_path: Path) -> Iterator[dict]:
    """`dagster dev` until the block ends (SIGTERM to its process group, then SIGKILL): url, instance, log, server."""
    port, log_file = free_port(), tmp_path / "dagster_dev.log"
    started = time.monotonic()
    server = start_dagster_ui(port, env, log_file, cwd=tmp_path)
    print(f"dagster dev answered after {time.monotonic() - started:.1f}s")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield {"url": f"http://127.0.0.1:{port}", "instance": instance, "log": log_file, "server": server}
    finally:
        instance.dispose()
        stop_process_group(server, signal.SIGTERM)


@contextlib.contextmanager
def chromium_page(tmp_path: Path, viewport: dict) -> Iterator:
    """A page in Debian's headless Chromium; a screenshot of its last state is kept in `tmp_path`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport=viewport)
        page.set_default_timeout(30_000)
        dismiss_welcome(page)
        yield page
        page.screenshot(path=str(tmp_path / "last_page.png"))
        browser.close()


@contextlib.contextmanager
def shown_on_failure(page, ui: dict, step: str):
    """Name the step, the page's URL and the server's log tail when a step fails."""
    try:
        yield
    except Exception as error:
        log = tail(ui["log"], 25)
        raise AssertionError(f"{step} failed at {page.url}: {error}\n--- dagster dev log ---\n{log}") from error
