"""The run launcher of both instance configs: Dagster's default one, plus a run-worker health check.

Why: a run whose process dies (SIGKILL, `movie-platform down` or a crashed `dagster dev` mid-run)
stays STARTED and keeps its `tmdb_api` pool slot, so every later crawl waits forever. Dagster's run
monitoring fails such runs only when the launcher can check its workers, and `DefaultRunLauncher`
cannot. This subclass can, by asking only (it never signals a process):

- on this host (the code server's address is a socket or loopback): whether the run worker's pid,
  which Dagster records in the event "Started process for run (pid: N)", still runs;
- otherwise: the code server named by the run's `GRPC_INFO_TAG`, through `GetCurrentRuns` (a
  `dagster api grpc` server) or `CanCancelExecution` (a `dagster code-server start` proxy, which
  does not implement the former, while it still has the code server id the run was launched on).

A dead run is reported FAILED with a message naming the code server and what happened; the
monitoring daemon then fails the run and, after `free_slots_after_run_end_seconds`, frees its slots.
When the answer is unclear (a timeout, a proxy that reloaded its code since), the run counts as
running: a live run is never failed on a guess.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher

from movie_assets.dagster_private import (
    GRPC_INFO_TAG,
    CanCancelExecutionRequest,
    CanCancelExecutionResult,
    CheckRunHealthResult,
    DagsterGrpcClient,
    DagsterUserCodeUnreachableError,
    GetCurrentRunsResult,
    LaunchRunContext,
    WorkerStatus,
    deserialize_value,
)

# The code server's id when the run was launched: a proxy that answers with another one has
# reloaded (or restarted) its code, so "not running here" says nothing about the run.
CODE_SERVER_ID_TAG = "movie/code_server_id"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
ASK_TIMEOUT_S = 10
WORKER_STARTED = "Started process for run"
# Where a run executed outside a code server was orchestrated: host (with boot id), pid and start time.
ORCHESTRATOR_TAG = "movie/orchestrator"


class RunWorkerCheckingLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` (runs start in the code server) whose workers run monitoring can check."""

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context)
        client = grpc_client(self._instance.get_run_by_id(context.dagster_run.run_id))
        if client is not None:
            try:
                self._instance.add_run_tags(
                    context.dagster_run.run_id, {CODE_SERVER_ID_TAG: client.get_server_id(timeout=ASK_TIMEOUT_S)}
                )
            except DagsterUserCodeUnreachableError:
                pass  # the health check then never fails this run on a proxy's "not here"

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        return run_worker_health(self._instance, run)


def run_worker_health(instance: Any, run: DagsterRun) -> CheckRunHealthResult:
    """RUNNING, or FAILED with the reason; see the module docstring for what is asked where."""
    info = grpc_info(run)
    if info is None:
        return orchestrator_health(run)
    where = describe(info)
    pid, started_at = worker_pid(instance, run.run_id)
    if pid is not None and is_local(info):
        if worker_alive(pid, started_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} of {where} runs")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"The run worker (pid {pid}) that code server {where} started for this run has exited without "
            "reporting an end (killed, or its code server was stopped): marked failed so that its pool slots "
            "are freed. Re-launch the run.",
        )
    return ask_code_server(run, info, where)


def this_host() -> str:
    """Where a pid means something: this host, this boot and this pid namespace (containers have their own)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        boot, namespace = "unknown-boot", 0
    return f"{socket.gethostname()}/{boot}/{namespace}"


def orchestrator_tag(run_id: str) -> dict[str, str]:
    """The tag a run executed by this process carries (automation/executor.py sets it at the run's start).

    It names the run (a re-executed run copies its parent's tags; a tag of another run says nothing) and
    the process by pid and creation time, which a clock step does not move and a reused pid does not share.
    """
    import psutil

    created = psutil.Process(os.getpid()).create_time()
    return {
        ORCHESTRATOR_TAG: json.dumps({"run_id": run_id, "host": this_host(), "pid": os.getpid(), "created": created})
    }


def orchestrator_health(run: DagsterRun) -> CheckRunHealthResult:
    """A run executed outside a code server (the dagster CLI): its orchestrating process, if on this host.

    Without our tag for this run, or on another host (another container, another machine), nothing can be
    told: RUNNING.
    """
    raw = run.tags.get(ORCHESTRATOR_TAG)
    where = json.loads(raw) if raw else None
    if not where or where.get("run_id") != run.run_id or where.get("host") != this_host():
        return CheckRunHealthResult(
            WorkerStatus.RUNNING, "executed outside a code server on another host (or untagged): not checked"
        )
    pid = int(where["pid"])
    if process_alive(pid, float(where["created"])):
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"its process (pid {pid}) on this host runs")
    return CheckRunHealthResult(
        WorkerStatus.FAILED,
        f"The process that executed this run (pid {pid}, the dagster CLI on this host) has exited without "
        "reporting an end (killed): marked failed so that its pool slots are freed. Run the same command "
        "again: a crawl resumes where it stopped.",
    )


def process_alive(pid: int, created: float) -> bool:
    """The process `pid` created at `created` still runs (not a zombie); one we may not inspect counts as alive."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - created) < 0.05
    except psutil.AccessDenied:
        return True
    except psutil.Error:
        return False


def ask_code_server(run: DagsterRun, info: Mapping[str, Any], where: str) -> CheckRunHealthResult:
    client = client_for(info)
    try:
        current = deserialize_value(client.get_current_runs(), GetCurrentRunsResult).current_runs
    except DagsterUserCodeUnreachableError as exc:
        code = exc.__cause__.code() if isinstance(exc.__cause__, grpc.RpcError) else None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return ask_proxy(client, run, where)
        if code == grpc.StatusCode.UNAVAILABLE:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"The code server {where} that ran this run is gone (unreachable: the code location was stopped "
                "or restarted): its run worker went with it. Marked failed so that its pool slots are freed; "
                "re-launch the run.",
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"could not ask code server {where} ({exc}); asks again")
    if run.run_id in current:
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"code server {where} runs it")
    return CheckRunHealthResult(
        WorkerStatus.FAILED,
        f"The code server {where} does not run this run any more (it was restarted, or the run worker died "
        "without reporting an end). Marked failed so that its pool slots are freed; re-launch the run.",
    )


def ask_proxy(client: DagsterGrpcClient, run: DagsterRun, where: str) -> CheckRunHealthResult:
    """A `dagster code-server start` proxy: only the code server it runs now can answer."""
    try:
        answer = client.can_cancel_execution(CanCancelExecutionRequest(run_id=run.run_id), timeout=ASK_TIMEOUT_S)
        running = deserialize_value(answer, CanCancelExecutionResult).can_cancel
        server_id = client.get_server_id(timeout=ASK_TIMEOUT_S)
    except DagsterUserCodeUnreachableError as exc:
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"could not ask code server {where} ({exc}); asks again")
    if running:
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"code server {where} runs it")
    if server_id != run.tags.get(CODE_SERVER_ID_TAG):
        return CheckRunHealthResult(
            WorkerStatus.RUNNING, f"code server {where} reloaded its code since the launch: cannot tell, not failed"
        )
    return CheckRunHealthResult(
        WorkerStatus.FAILED,
        f"The code server {where} does not run this run any more (its run worker died without reporting an "
        "end). Marked failed so that its pool slots are freed; re-launch the run.",
    )


def grpc_info(run: DagsterRun | None) -> dict[str, Any] | None:
    """Host/port/socket of the code server that runs `run` (Dagster's own tag), or None."""
    raw = run.tags.get(GRPC_INFO_TAG) if run is not None else None
    return json.loads(raw) if raw else None


def grpc_client(run: DagsterRun | None) -> DagsterGrpcClient | None:
    info = grpc_info(run)
    return client_for(info) if info else None


def client_for(info: Mapping[str, Any]) -> DagsterGrpcClient:
    return DagsterGrpcClient(
        port=info.get("port"),
        socket=info.get("socket"),
        host=info.get("host") or "localhost",
        use_ssl=bool(info.get("use_ssl", False)),
    )


def describe(info: Mapping[str, Any]) -> str:
    return f"{info.get('host')}:{info['port']}" if info.get("port") else f"on socket {info.get('socket')}"


def is_local(info: Mapping[str, Any]) -> bool:
    """A socket or a loopback address: the run worker's pid is a pid of this host."""
    return bool(info.get("socket")) or info.get("host") in LOCAL_HOSTS


def worker_pid(instance: Any, run_id: str) -> tuple[int | None, float | None]:
    """The pid from Dagster's "Started process for run (pid: N)." engine event, and when it was written."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if record.message.startswith(WORKER_STARTED) and record.dagster_event is not None:
            pid = record.dagster_event.engine_event_data.metadata.get("pid")  # MetadataValue.text
            if pid is not None and str(pid.value).isdigit():
                return int(str(pid.value)), record.timestamp
    return None, None


def worker_alive(pid: int, started_at: float | None) -> bool:
    """Reads the process table only. A process created after the event holds a reused pid: not ours."""
    import psutil  # a dependency of feast; imported here so instance loading stays light

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_at is None or proc.create_time() <= started_at + 1
    except psutil.Error:
        return False
