"""A crawl killed mid-run does not block the next one: run monitoring fails it and frees its pool slot.

The scene of issue 15 (item 1): `dagster dev` (or the machine) dies while a crawl holds the
`tmdb_api` slot. Its run stays STARTED, and before the fix every later crawl logged "Step blocked by
limit for pool tmdb_api" forever. Here a real `dagster-daemon run` on an instance of the test's own
launches a crawl against a TMDB that answers discover only when told to; the test SIGKILLs that
daemon's whole process group (daemon, code server, run worker: all started by the test), starts a
second daemon, and launches the next crawl, which must succeed within the monitoring interval.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient

from movie_assets.automation.run_launcher import CODE_SERVER_ID_TAG, run_worker_health
from movie_assets.resources.tmdb_sample import movies_for_month
from movie_assets_tests.conftest import free_port, stop_process_group, wait_for
from movie_assets_tests.integration.dagster_instance import daemon_env, own_instance_home, start_daemon
from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer
from movie_platform.local_stack import REPO_ROOT, tail

MONTH = dt.date(2024, 3, 1)
MONITOR_INTERVAL_S = 2
# Daemon start, detection (one poll), slot release (an interval after the failure), dequeue, launch, the crawl.
NEXT_CRAWL_DEADLINE_S = 90


class HeldDiscover(FakeTmdb):
    """Discover answers only once `release` is set: the first crawl is in the middle of its month."""

    def __post_init__(self):
        super().__post_init__()
        self.asked = threading.Event()
        self.release = threading.Event()

    def handle(self, path, query, headers):
        if path == "/3/discover/movie":
            self.asked.set()
            self.release.wait(120)
        return super().handle(path, query, headers)


@pytest.fixture
def instance_home(stack_env, tmp_path):
    """A Dagster instance of the test's own, as `movie-platform up` writes it, polled every 2 s."""
    home = tmp_path / "dagster_home"
    with own_instance_home(stack_env["MOVIE_DB_URL"], home, "dagster_dead", monitor_interval_s=MONITOR_INTERVAL_S):
        yield home


def launch_crawl(env: dict) -> None:
    """Queue a crawl of MONTH (refresh_recent_months: movies_raw in the tmdb_api pool + its backup)."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "job", "launch", "-m", "movie_assets"]
        + ["-j", "refresh_recent_months", "--tags", json.dumps({"dagster/partition": MONTH.isoformat()})]
        # Steps in the run worker itself: a process per check step would cost seconds apiece here.
        + ["--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def crawls(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The crawls of this test."""
    return list(instance.get_runs(filters=dg.RunsFilter(job_name="refresh_recent_months")))


def crawled(instance: dg.DagsterInstance, run_id: str) -> bool:
    """The run's movies_raw step (the one in the tmdb_api pool) succeeded."""
    done = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    return any(event.step_key == "movies_raw" for event in done)


def test_a_killed_crawl_is_failed_and_the_next_crawl_gets_the_tmdb_api_slot(
    database, object_store, stack_env, instance_home, tmp_path
):
    fake = HeldDiscover(movies_for_month(MONTH))
    with TmdbTestServer(fake) as server:
        env = daemon_env(
            instance_home,
            database,
            object_store,
            server.base_url,
            MOVIE_AUTOMATION="off",
            MOVIE_RETRAIN_SHARE="off",
            MOVIE_SYNC_INTERVAL_SECONDS="off",  # a sync launched beside the crawl would be a second run to kill
        )
        instance = dg.DagsterInstance.from_config(str(instance_home))
        log_file = tmp_path / "daemon.log"
        first_daemon = start_daemon(env, log_file)
        second_daemon = None
        try:
            launch_crawl(env)
            wait_for(fake.asked.is_set, 120, "the first crawl to ask TMDB's discover", log_file)
            (killed,) = crawls(instance)
            assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
            worker = next(
                e.dagster_event.engine_event_data.metadata["pid"].value
                for e in instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                if e.message.startswith("Started process for run")
            )
            assert os.getpgid(int(worker)) == first_daemon.pid, "the run worker belongs to the daemon we started"
            assert instance.get_run_by_id(killed.run_id).tags.get(CODE_SERVER_ID_TAG), "the launcher records it"

            # `dagster dev` dies mid-crawl: daemon, code server and run worker, no chance to report anything.
            stop_process_group(first_daemon, signal.SIGKILL)
            fake.release.set()
            assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED

            second_daemon = start_daemon(env, log_file)
            launch_crawl(env)
            (next_crawl,) = [run for run in crawls(instance) if run.run_id != killed.run_id]
            queued_at = time.monotonic()
            wait_for(
                lambda: crawled(instance, next_crawl.run_id),
                NEXT_CRAWL_DEADLINE_S,
                f"the next crawl's movies_raw (tmdb_api pool) to succeed; the killed run is "
                f"{instance.get_run_by_id(killed.run_id).status}",
                log_file,
            )
            print(f"next crawl's movies_raw done {time.monotonic() - queued_at:.0f}s after it was queued")
            # Its checks and backup follow, one step process each (seconds apiece on a busy machine).
            wait_for(
                lambda: instance.get_run_by_id(next_crawl.run_id).is_finished, 120, "the next crawl's end", log_file
            )
        finally:
            fake.release.set()
            for daemon in (first_daemon, second_daemon):
                if daemon is not None:
                    stop_process_group(daemon, signal.SIGTERM)

        assert instance.get_run_by_id(next_crawl.run_id).status == dg.DagsterRunStatus.SUCCESS, tail(log_file, 40)
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        failure = instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
        assert f"The run worker (pid {worker})" in failure.message and "has exited" in failure.message, failure.message
        assert not instance.event_log_storage.get_concurrency_run_ids(), "every pool slot is free again"
        instance.dispose()


@pytest.mark.parametrize("server", [["api", "grpc"], ["code-server", "start"]], ids=["api_grpc", "code_server_proxy"])
def test_a_run_its_code_server_does_not_run_is_failed_and_one_without_a_code_server_is_left_alone(tmp_path, server):
    """The remote path (compose: the code server is another host, no pid to look at): ask the server.

    `dagster api grpc` answers GetCurrentRuns; the `dagster code-server start` proxy of compose and
    `dagster dev` does not, and is asked CanCancelExecution, trusted only on the server id of the launch.
    """
    code = tmp_path / "one_job.py"
    code.write_text("import dagster as dg\n\n@dg.op\ndef noop():\n    pass\n\n@dg.job\ndef one():\n    noop()\n")
    host, port = "127.0.0.2", free_port()  # loopback, but not an address the check takes for this host
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), *server, "-h", host, "-p", str(port), "-f", str(code)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = DagsterGrpcClient(host=host, port=port)
        wait_for_server(client)
        at = json.dumps({"host": host, "port": port})
        with dg.instance_for_test() as instance:

            def health(tags: dict):
                return run_worker_health(
                    instance, instance.create_run_for_job(dg.GraphDefinition("g").to_job(), tags=tags)
                )

            not_running = health({GRPC_INFO_TAG: at, CODE_SERVER_ID_TAG: client.get_server_id()})
            assert not_running.status == WorkerStatus.FAILED, not_running
            assert f"{host}:{port} does not run this run any more" in str(not_running.msg)

            gone = health({GRPC_INFO_TAG: json.dumps({"host": host, "port": free_port()})})
            assert gone.status == WorkerStatus.FAILED and "is gone" in str(gone.msg), gone

            in_process = health({})
            assert in_process.status == WorkerStatus.RUNNING, in_process

            if server[0] == "code-server":  # launched before a reload: the old code server may still run it
                reloaded = health({GRPC_INFO_TAG: at, CODE_SERVER_ID_TAG: "an-earlier-server"})
                assert reloaded.status == WorkerStatus.RUNNING and "reloaded" in str(reloaded.msg), reloaded
    finally:
        stop_process_group(process, signal.SIGTERM)


def wait_for_server(client: DagsterGrpcClient) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.ping("")
            return
        except DagsterUserCodeUnreachableError:
            time.sleep(0.3)
    pytest.fail("dagster api grpc did not start within 60 s")
