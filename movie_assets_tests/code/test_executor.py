"""The executor frees the pool slots of dead CLI runs of this host, and touches nothing else.

A run's process is told apart by the tag the executor sets (host and boot, pid, start time): a pid
that has exited, or that a process younger than the run now holds, is dead; a live pid, another
host's run and an untagged run are left alone. The end-to-end case (a SIGKILLed CLI backfill, no daemon) is
integration/test_backfill_resume.py.
"""

import json
import os
import subprocess
import sys
import time

import dagster as dg
from dagster._core.launcher import WorkerStatus

from movie_assets.automation.executor import free_dead_runs
from movie_assets.automation.run_launcher import ORCHESTRATOR_TAG, orchestrator_health, this_host


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def tag(pid: int, host: str | None = None, started_at: float | None = None) -> dict[str, str]:
    where = {"host": host or this_host(), "pid": pid, "started_at": started_at or time.time()}
    return {ORCHESTRATOR_TAG: json.dumps(where)}


def started_run(instance: dg.DagsterInstance, tags: dict) -> dg.DagsterRun:
    return instance.create_run_for_job(
        dg.GraphDefinition("crawl").to_job(), tags=tags, status=dg.DagsterRunStatus.STARTED
    )


def test_only_a_run_whose_process_on_this_host_is_gone_is_dead():
    with dg.instance_for_test() as instance:
        reused = tag(os.getpid(), started_at=time.time() - 3600)  # the pid now belongs to a younger process
        for tags in (tag(exited_pid()), reused):
            dead = orchestrator_health(started_run(instance, tags))
            assert dead.status == WorkerStatus.FAILED and "has exited without reporting an end" in str(dead.msg)
        for tags in (
            tag(os.getpid()),  # alive
            tag(exited_pid(), host="another-container/another-boot"),
            {},
        ):
            health = orchestrator_health(started_run(instance, tags))
            assert health.status == WorkerStatus.RUNNING, (tags, health)


def test_free_dead_runs_fails_the_dead_one_and_frees_its_slot():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots("tmdb_api", 1)
        dead = started_run(instance, tag(exited_pid()))
        live = started_run(instance, tag(os.getpid()))
        claim = instance.event_log_storage.claim_concurrency_slot("tmdb_api", dead.run_id, "movies_raw")
        assert claim.is_claimed
        assert not instance.event_log_storage.claim_concurrency_slot("tmdb_api", "next", "movies_raw").is_claimed
        freed = free_dead_runs(instance, exclude="next")
        assert len(freed) == 1 and dead.run_id in freed[0]
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.claim_concurrency_slot("tmdb_api", "next", "movies_raw").is_claimed
