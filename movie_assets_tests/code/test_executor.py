"""The executor frees the pool slots of dead CLI runs of this host, and touches nothing else.

A run's process is told apart by the tag the executor sets (its run, host, pid and the process's
creation time): a pid that has exited, or that another process now holds, is dead; a live process,
another host's run, a tag copied from another run and an untagged run are left alone. The end-to-end
case (a SIGKILLed CLI backfill, no daemon) is integration/test_backfill_resume.py.
"""

import json
import os
import subprocess
import sys

import dagster as dg
import psutil
from dagster._core.launcher import WorkerStatus

from movie_assets.automation.executor import free_dead_runs
from movie_assets.automation.run_launcher import ORCHESTRATOR_TAG, orchestrator_health, this_host


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def started_run(instance: dg.DagsterInstance, pid: int | None, host: str | None = None, created=None, of=None):
    """A STARTED run; tagged as the executor tags it (with `of`: the tag another run's, copied on re-execution)."""
    run = instance.create_run_for_job(dg.GraphDefinition("crawl").to_job(), status=dg.DagsterRunStatus.STARTED)
    if pid is not None:
        where = {"run_id": of or run.run_id, "host": host or this_host(), "pid": pid}
        where["created"] = created if created is not None else psutil.Process(os.getpid()).create_time()
        instance.add_run_tags(run.run_id, {ORCHESTRATOR_TAG: json.dumps(where)})
    return instance.get_run_by_id(run.run_id)


def test_only_a_run_whose_process_on_this_host_is_gone_is_dead():
    with dg.instance_for_test() as instance:
        mine = psutil.Process(os.getpid()).create_time()
        for dead in (
            started_run(instance, exited_pid()),
            started_run(instance, os.getpid(), created=mine - 3600),  # the pid now belongs to a younger process
        ):
            health = orchestrator_health(dead)
            assert health.status == WorkerStatus.FAILED and "has exited without reporting an end" in str(health.msg)
        for run in (
            started_run(instance, os.getpid()),  # alive
            started_run(instance, exited_pid(), host="another-container/another-boot/1"),
            started_run(instance, exited_pid(), of="the-parent-run"),  # re-executed: the parent's tag, copied
            started_run(instance, None),
        ):
            health = orchestrator_health(run)
            assert health.status == WorkerStatus.RUNNING, (run.tags, health)


def test_free_dead_runs_fails_the_dead_one_and_frees_its_slot():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots("tmdb_api", 1)
        dead = started_run(instance, exited_pid())
        live = started_run(instance, os.getpid())
        claim = instance.event_log_storage.claim_concurrency_slot("tmdb_api", dead.run_id, "movies_raw")
        assert claim.is_claimed
        assert not instance.event_log_storage.claim_concurrency_slot("tmdb_api", "next", "movies_raw").is_claimed
        freed = free_dead_runs(instance, exclude="next")
        assert len(freed) == 1 and dead.run_id in freed[0]
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.claim_concurrency_slot("tmdb_api", "next", "movies_raw").is_claimed


def test_steps_fork_from_a_preloaded_server_unless_the_run_config_chooses():
    from movie_assets.automation.executor import FORKSERVER, with_forkserver

    assert with_forkserver({"multiprocess": {}}) == {"multiprocess": {"start_method": FORKSERVER}}
    assert with_forkserver({"multiprocess": {"max_concurrent": 2}})["multiprocess"] == {
        "max_concurrent": 2,
        "start_method": FORKSERVER,
    }
    spawn = {"multiprocess": {"start_method": {"spawn": {}}}}
    assert with_forkserver(spawn) == spawn and with_forkserver({"in_process": {}}) == {"in_process": {}}
    assert FORKSERVER["forkserver"]["preload_modules"] == ["movie_assets.definitions"]
