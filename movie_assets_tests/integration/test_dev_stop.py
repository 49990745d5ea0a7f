"""A `movie-platform dev` started in the background (SIGINT ignored) stops on `movie-platform down` and on SIGINT.

The dev UI runs on a stack of the test's own (state folder, ports, PostgreSQL and Redis), so
`down` stops that stack and never the shared test stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from movie_assets_tests.conftest import wait_for
from movie_assets_tests.integration.test_stack_ownership import OwnStack, free_ports
from movie_platform.local_stack import REPO_ROOT, _port_open


@pytest.fixture
def dev_stack():
    stack = OwnStack(external_mlflow=True)  # MLflow is never contacted by `dg dev`: not started
    stack.env = {k: v for k, v in stack.env.items() if not k.startswith("TMDB_")}  # the sample source
    stack.env["MOVIE_SYNC_INTERVAL_SECONDS"] = "off"  # the daemon launches nothing on its own
    yield stack
    stack.cleanup()


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def short(procs: list[psutil.Process]) -> list[str]:
    """The start of each command line (Dagster's carry a page of --instance-ref JSON)."""
    return [" ".join(proc.cmdline()[:6]) for proc in procs if proc.is_running()]


def with_state_dir(state_dir) -> list[str]:
    """Command lines of live processes that name the state folder (the stack's servers, the dev UI's instance)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(cmdline)
    return found


@pytest.mark.parametrize("stop", ["down", "sigint"])
def test_backgrounded_dev_stops(dev_stack, stop):
    """`down` stops the whole dev UI; so does a SIGINT (Ctrl-C) to `movie-platform dev`, which inherited it ignored."""
    port = free_ports(1)[0]
    log = dev_stack.state_dir / "dev.out"
    # `&` in a non-interactive shell starts the job with SIGINT ignored, as `make dev &` does.
    script = f"{sys.executable} -m movie_platform.cli dev --port {port} > {log} 2>&1 & echo $!"
    shell = subprocess.run(["bash", "-c", script], env=dev_stack.env, cwd=REPO_ROOT, capture_output=True, text=True)
    dev = psutil.Process(int(shell.stdout))
    tree = [dev]
    try:
        with open(f"/proc/{dev.pid}/status") as proc_status:
            sigign = int(next(line for line in proc_status if line.startswith("SigIgn")).split()[1], 16)
        assert sigign & (1 << 1), "the shell should have started dev with SIGINT ignored (bit 2 of SigIgn)"
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/server_info", timeout=5).ok, 240, "the Dagster UI", log)
        tree = process_tree(dev.pid)  # movie-platform, redis (started by its `up`), dg dev, webserver, daemon, ...
        assert len(tree) >= 4, short(tree)

        # The repository's dagster.yaml (the instance's template) is not "ignored": dev runs in DAGSTER_HOME.
        assert "Found a dagster instance configuration" not in log.read_text(), log.read_text()[-2000:]
        # No warning in the console: `dg dev` (not the superseded `dagster dev`), and the code server,
        # which has loaded the location by now, shows no Dagster deprecations (Feast turned them on).
        assert "Warning" not in log.read_text(), log.read_text()[-3000:]
        status = dev_stack.cli("status").stdout
        dev_line = next((line for line in status.splitlines() if line.startswith("dev ")), "")
        assert " running " in dev_line and url in dev_line, status

        if stop == "sigint":  # Ctrl-C stops the UI (movie-platform dev and dg dev's group), not the stack
            services = [dev_stack.state()["services"][name]["pid"] for name in ("postgres", "redis")]
            ui = [proc for proc in tree if proc.pid not in services]
            os.kill(dev.pid, signal.SIGINT)
            _gone, alive = psutil.wait_procs(ui, timeout=40)
            assert not alive, f"SIGINT left the dev UI running: {short(alive)}"
            assert not _port_open(port), f"the Dagster UI still answers on {port}"
            return
        down = dev_stack.cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
        _gone, alive = psutil.wait_procs(tree, timeout=10)
        assert not alive, f"down left the dev UI running: {short(alive)}"
        assert not _port_open(port), f"the Dagster UI still answers on {port}"
        assert with_state_dir(dev_stack.state_dir) == []
        assert dev_stack.processes() == []
        assert "stopped dev" in down.stdout, down.stdout
    finally:
        if dev.is_running():
            tree = [*tree, *dev.children(recursive=True)]
        for proc in tree:  # only what this test started, if `down` failed to stop it
            try:
                proc.kill()
            except psutil.Error:
                pass
