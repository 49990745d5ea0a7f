"""`up`/`down` never lose track of what they start, and never signal what they did not start.

Each test runs its own stack in its own state folder on its own ports (never the
shared test stack), with MLflow left out where it is not needed (it takes ~6 s to start).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid

import psutil
import pytest

from movie_platform.local_stack import REPO_ROOT, Stack

# Variables that would point a child `movie-platform` at the shared test stack or make a service external.
STACK_VARS = ("MOVIE_", "MLFLOW_", "DAGSTER_", "FEAST_", "AWS_")


def free_ports(count: int) -> list[int]:
    """Ports below the ephemeral range that nothing listens on (and apart from the stacks' defaults)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 32000)
        if port in ports or port % 1000 in (0, 432, 379):  # 15432/25432, 16379/26379, 15000/25000 & co.
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


class OwnStack:
    """A stack of the test's own: state folder, ports and the environment a `movie-platform` child gets."""

    def __init__(self, external_mlflow: bool) -> None:
        # Under .movie_platform/ (like the test stack): PostgreSQL's system user must traverse its parents.
        self.state_dir = REPO_ROOT / ".movie_platform" / f"own-{uuid.uuid4().hex[:8]}"
        self.state_dir.mkdir(parents=True)
        pg, redis, mlflow, s3 = free_ports(4)
        self.ports = {"postgres": pg, "redis": redis, "mlflow": mlflow, "s3": s3}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_VARS)}
        self.env.update(
            MOVIE_PLATFORM_STATE_DIR=str(self.state_dir),
            MOVIE_PG_PORT=str(pg),
            MOVIE_REDIS_PORT=str(redis),
            MOVIE_MLFLOW_PORT=str(mlflow),
            MOVIE_S3_PORT=str(s3),
        )
        if external_mlflow:  # an "external" MLflow is never started (nor contacted) by `up`
            self.env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow}"

    def cli(self, *args: str, wait: bool = True):
        cmd = [sys.executable, "-m", "movie_platform.cli", *args]
        if not wait:
            return subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)

    def state(self) -> dict:
        return json.loads((self.state_dir / "stack.json").read_text())

    def processes(self) -> list[psutil.Process]:
        """Live processes running inside the state folder (every service is spawned with its cwd there)."""
        found = []
        for proc in psutil.process_iter(["cwd", "status"]):
            cwd = proc.info["cwd"] or ""
            if cwd.startswith(str(self.state_dir)) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        return found

    def listeners(self, port: int) -> set[int]:
        """PIDs listening on 127.0.0.1:`port`."""
        return {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        }

    def cleanup(self) -> None:
        """Stop whatever the test's stack left (processes inside its own state folder only), then remove it."""
        Stack(self.state_dir, environ=self.env).down(log=lambda _msg: None)
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.processes(), timeout=10)
        shutil.rmtree(self.state_dir, ignore_errors=True)


@pytest.fixture
def own_stack(request):
    stack = OwnStack(external_mlflow=getattr(request, "param", True))
    yield stack
    stack.cleanup()


def test_two_concurrent_ups_start_each_service_once(own_stack):
    first, second = own_stack.cli("up", wait=False), own_stack.cli("up", wait=False)
    outputs = [proc.communicate(timeout=300) for proc in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    # They overlapped: one waited for the other's lock, then found both services running.
    waited = [out for out, _err in outputs if "waiting for another `movie-platform up/down`" in out]
    assert len(waited) == 1 and waited[0].count("already running") == 2, outputs

    state = own_stack.state()["services"]
    for name in ("postgres", "redis"):
        listeners = own_stack.listeners(own_stack.ports[name])
        assert listeners == {state[name]["pid"]}, f"{name}: listening {listeners}, recorded {state[name]['pid']}"
    redis_servers = [p for p in own_stack.processes() if "redis-server" in p.name()]
    assert len(redis_servers) == 1, [p.cmdline() for p in redis_servers]
    status = own_stack.cli("status").stdout
    assert all(" running " in line for line in status.splitlines() if line.startswith(("postgres", "redis"))), status

    # A state file written before start times were recorded (the old format) is still understood.
    legacy = own_stack.state()
    for svc in legacy["services"].values():
        svc.pop("started", None)
    (own_stack.state_dir / "stack.json").write_text(json.dumps(legacy))
    before = {p.pid for p in own_stack.processes()}
    again = own_stack.cli("up")
    assert again.returncode == 0 and again.stdout.count("already running") == 2, again.stdout + again.stderr
    assert {p.pid for p in own_stack.processes()} == before

    down = own_stack.cli("down")
    assert down.returncode == 0, down.stderr
    assert own_stack.processes() == [], "down must stop every process up started"
    for name in ("postgres", "redis"):
        assert own_stack.listeners(own_stack.ports[name]) == set(), f"{name} still listening after down"


@pytest.mark.parametrize("own_stack", [False], indirect=True)
def test_failed_up_stops_what_it_started(own_stack):
    """MLflow's port (the third service) is taken by a socket the test holds: postgres and redis are undone."""
    port = own_stack.ports["mlflow"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = own_stack.cli("up")
        assert result.returncode == 1, result.stdout + result.stderr
        error = result.stderr.strip().splitlines()
        assert error[0].startswith(f"error: mlflow: port {port} on 127.0.0.1 is taken"), result.stderr
        assert "MOVIE_MLFLOW_PORT" in error[0], result.stderr

    for name in ("postgres", "redis"):
        assert own_stack.listeners(own_stack.ports[name]) == set(), f"{name} left running by a failed up"
    assert own_stack.processes() == [], [p.cmdline() for p in own_stack.processes()]
    assert not any(svc.get("pid") for svc in own_stack.state()["services"].values()), own_stack.state()
    assert "stopped what this `up` had started: postgres, redis" in result.stderr, result.stderr


def test_down_never_signals_a_reused_pid(own_stack):
    """A recorded PID now held by another process (here a `sleep` the test started) is not ours: left alone."""
    strangers = [subprocess.Popen(["sleep", "120"], start_new_session=True, stdin=subprocess.DEVNULL) for _ in range(2)]
    try:
        services = {
            # Recorded with a start time that is not the sleep's: its PID was reused.
            "redis": {
                "name": "redis",
                "url": f"redis://127.0.0.1:{own_stack.ports['redis']}/0",
                "external": False,
                "pid": strangers[0].pid,
                "started": "ticks:1",
                "log": None,
                "signature": None,
            },
            # Recorded by an older version (no start time); the sleep does not listen on postgres' port.
            "postgres": {
                "name": "postgres",
                "url": f"postgresql://postgres@127.0.0.1:{own_stack.ports['postgres']}/movies",
                "external": False,
                "pid": strangers[1].pid,
                "log": None,
                "signature": None,
            },
        }
        (own_stack.state_dir / "stack.json").write_text(json.dumps({"services": services, "env": {"X": "1"}}))

        status = own_stack.cli("status")
        lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.startswith(("redis", "postgres"))}
        assert "stopped" in lines["redis"] and "stopped" in lines["postgres"], status.stdout

        down = own_stack.cli("down")
        assert down.returncode == 0, down.stderr
        assert [proc.poll() for proc in strangers] == [None, None], "down signalled a process it did not start"
        assert "left alone" in down.stdout, down.stdout
    finally:
        for proc in strangers:
            proc.kill()
            proc.wait()


def test_airflow_down_never_signals_a_reused_pid(tmp_path):
    """The Airflow runtime applies the same rule to its webserver and scheduler PIDs."""
    from movie_platform.airflow_runtime import AirflowRuntime

    runtime = AirflowRuntime(state_dir=tmp_path, environ={})
    strangers = [subprocess.Popen(["sleep", "120"], start_new_session=True, stdin=subprocess.DEVNULL) for _ in range(2)]
    try:
        runtime.save(
            {
                "url": runtime.url,
                "webserver": {"pid": strangers[0].pid, "log": None, "started": "ticks:1"},
                "scheduler": {"pid": strangers[1].pid, "log": None},  # an older runtime.json: no start time
            }
        )
        assert not runtime.running()
        assert [row["running"] for row in runtime.status()] == [False, False]
        messages: list[str] = []
        runtime.down(log=messages.append)
        assert [proc.poll() for proc in strangers] == [None, None], "down signalled a process it did not start"
        assert sum("left alone" in m for m in messages) == 2, messages
    finally:
        for proc in strangers:
            proc.kill()
            proc.wait()
