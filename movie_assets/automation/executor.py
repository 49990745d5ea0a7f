"""The code location's executor: Dagster's `multi_or_in_process_executor`, freeing dead runs' pool slots first,
with steps forked from a preloaded server by default.

Why: a run of the dagster CLI (`dagster asset materialize`, `dg launch`) that is killed stays STARTED
and keeps its `tmdb_api` slot, and without a daemon nothing frees it: the next crawl waits forever.
Every run this executor starts records where it is orchestrated (host and boot, pid: the tag of
`run_launcher.orchestrator_tag`). At the start of each run, STARTED runs whose tag names this host
and whose process is gone are marked failed, with the reason, and their slots are freed; the run
says so in its log. Runs of other hosts, untagged runs and live ones are never touched, and no
process is signalled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import dagster as dg

from movie_assets.automation.run_launcher import orchestrator_health, orchestrator_tag
from movie_assets.dagster_private import WorkerStatus

INNER = dg.multi_or_in_process_executor
# Steps fork from a server that imported the code location once, instead of each starting an interpreter
# that imports it again (seconds and hundreds of MB per step on 2 cores): `benchmarks/step_overhead.py`.
# It is the start method of every multiprocess run whose config names none; run config that names one
# (`start_method: {spawn: {}}`) or `in_process` still chooses.
FORKSERVER = {"forkserver": {"preload_modules": ["movie_assets.definitions"]}}


def free_dead_runs(instance: dg.DagsterInstance, exclude: str) -> list[str]:
    """Fail the STARTED runs of this host whose process is gone and free their pool slots; say which."""
    freed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run.run_id == exclude:
            continue
        health = orchestrator_health(run)
        if health.status != WorkerStatus.FAILED:
            continue
        current = instance.get_run_by_id(run.run_id)  # it may have ended between the listing and the check
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue
        instance.report_run_failed(current, str(health.msg))
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        freed.append(f"run {run.run_id} ({run.job_name}): {health.msg}")
    return freed


class FreeingDeadRuns(dg.Executor):
    """Dagster's executor, after tagging this run and freeing the slots of dead runs of this host."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator:
        instance, run_id = plan_context.instance, plan_context.dagster_run.run_id
        instance.add_run_tags(run_id, orchestrator_tag(run_id))
        for freed in free_dead_runs(instance, exclude=run_id):
            plan_context.log.warning(f"freed the pool slots of a dead {freed}")
        yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="multi_or_in_process_freeing_dead_runs",
    config_schema=INNER.config_schema.as_field(),
    requirements=INNER.get_requirements,
)
def movie_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    create = INNER.executor_creation_fn
    assert create is not None, "Dagster's multi_or_in_process_executor creates its executor"
    return FreeingDeadRuns(create(init_context._replace(executor_config=with_forkserver(init_context.executor_config))))


def with_forkserver(config: Mapping[str, object]) -> Mapping[str, object]:
    """The executor config, with the forkserver start method where a multiprocess config names none."""
    multiprocess = config.get("multiprocess")
    if not isinstance(multiprocess, Mapping) or multiprocess.get("start_method"):
        return config
    return {**config, "multiprocess": {**multiprocess, "start_method": FORKSERVER}}
