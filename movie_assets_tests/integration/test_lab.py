"""`movie-platform lab` serves JupyterLab with the stack's environment; 01_eda runs through that server's kernel.

The lab gets a state folder of its own whose services are all external (the test stack's),
so its `movie-platform down` stops the lab and nothing of the shared test stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
import requests
import websocket

from movie_assets_tests.conftest import movie_platform_cli
from movie_assets_tests.integration.test_stack_ownership import STACK_VARS, free_ports
from movie_platform.lab import NOTEBOOKS_DIR
from movie_platform.local_stack import REPO_ROOT, _alive, _port_open

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in kernel tracebacks


@pytest.fixture
def lab_env(stack_env):
    """`movie-platform` env for a lab of the test's own, on a free port, in front of the test stack's services."""
    state_dir = REPO_ROOT / ".movie_platform" / f"lab-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_VARS) and k != "JUPYTER_TOKEN"}
    env.update({k: v for k, v in stack_env.items() if k != "DAGSTER_HOME" and not k.startswith("FEAST_")})
    env.update(MOVIE_PLATFORM_STATE_DIR=str(state_dir), MOVIE_LAB_PORT=str(free_ports(1)[0]))
    yield env
    movie_platform_cli("down", env=env)  # the lab only, if a failed test left it: every service is external
    shutil.rmtree(state_dir, ignore_errors=True)


def run_cells(port: int, token: str, cells: list[str]) -> list[list[dict]]:
    """Execute each cell on a new kernel of the running server (REST + websocket); fail on the first error.

    Returns each cell's output messages (stream, display_data, execute_result).
    """
    auth = {"Authorization": f"token {token}"}
    kernel = requests.post(f"http://127.0.0.1:{port}/api/kernels", json={"name": "python3"}, headers=auth, timeout=60)
    kernel.raise_for_status()
    channels = websocket.create_connection(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel.json()['id']}/channels",
        header=[f"Authorization: token {token}"],
        timeout=300,
    )
    session, results = uuid.uuid4().hex, []
    try:
        for code in cells:
            msg_id = uuid.uuid4().hex
            header = {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "test"}
            content = {"code": code, "silent": False, "store_history": True, "allow_stdin": False}
            request = {"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {}}
            channels.send(json.dumps({**request, "content": {**content, "stop_on_error": True}, "channel": "shell"}))
            outputs, reply, idle = [], None, False
            while reply is None or not idle:
                message = json.loads(channels.recv())
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = message["header"]["msg_type"]
                if kind in ("stream", "display_data", "execute_result", "error"):
                    outputs.append(message)
                elif kind == "execute_reply":
                    reply = message["content"]
                elif kind == "status":
                    idle = message["content"]["execution_state"] == "idle"
            if reply["status"] != "ok":
                trace = "\n".join(reply.get("traceback") or [f"{reply.get('ename')}: {reply.get('evalue')}"])
                pytest.fail(f"cell failed on the lab's kernel:\n{code}\n{ANSI.sub('', trace)}")
            results.append(outputs)
    finally:
        channels.close()
    return results


def test_lab_runs_01_eda_through_its_kernel_and_down_stops_it(lab_env, demo_run):
    assert demo_run.returncode == 0, demo_run.stderr[-2000:]
    started = movie_platform_cli("lab", env=lab_env, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    found = re.search(r"http://127\.0\.0\.1:(\d+)/lab\?token=(\S+)", started.stdout)
    assert found, started.stdout
    port, token = int(found[1]), found[2]
    assert port == int(lab_env["MOVIE_LAB_PORT"])

    state_dir = Path(lab_env["MOVIE_PLATFORM_STATE_DIR"])
    token_file = state_dir / "lab_token"
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token not in (state_dir / "lab.log").read_text(), "the token belongs in the printed URL only"
    assert requests.get(f"http://127.0.0.1:{port}/api/kernels", timeout=10).status_code == 403, "no token, no access"

    again = movie_platform_cli("lab", env=lab_env)
    assert again.returncode == 0 and "lab already running" in again.stdout, again.stdout + again.stderr
    status = movie_platform_cli("status", env=lab_env).stdout
    lab_line = next(line for line in status.splitlines() if line.startswith("lab "))
    assert " running " in lab_line and f":{port}/lab" in lab_line and token not in status, status
    pid = int(lab_line.split("pid")[1])

    # The kernel works in notebooks/ with the stack's environment ...
    probe = run_cells(port, token, ["import os; print(os.getcwd(), os.environ['MLFLOW_TRACKING_URI'])"])[0]
    assert probe[0]["content"]["text"].split() == [str(NOTEBOOKS_DIR), lab_env["MLFLOW_TRACKING_URI"]]
    # ... and runs the EDA notebook: its plots come back as images.
    notebook = nbformat.read(NOTEBOOKS_DIR / "01_eda.ipynb", as_version=4)
    outputs = run_cells(port, token, [cell.source for cell in notebook.cells if cell.cell_type == "code"])
    assert any("image/png" in o["content"].get("data", {}) for cell in outputs for o in cell), "no plot rendered"

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]  # server and kernels
    assert len(processes) >= 3, [p.cmdline() for p in processes]
    down = movie_platform_cli("down", env=lab_env)
    assert down.returncode == 0 and f"stopped lab (pid {pid})" in down.stdout, down.stdout + down.stderr
    assert not _alive(pid) and not _port_open(port)
    _gone, alive = psutil.wait_procs(processes, timeout=5)
    assert not alive, f"down left the lab's kernels running: {[p.cmdline() for p in alive]}"
