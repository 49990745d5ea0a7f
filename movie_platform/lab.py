"""JupyterLab beside the embedded stack: `movie-platform lab` serves notebooks/ with the stack's environment.

It runs in the background, recorded in the stack's process table (PID + start time) as
`lab`, so `status` lists it and `down` stops it. The token is generated once and kept in
`lab_token` (owner-only) in the state folder; the server reads it from that file, so it
appears in no command line, environment or server log, only in the URL `lab` prints.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from movie_platform.local_stack import (
    REPO_ROOT,
    Stack,
    StackError,
    _port_open,
    _terminate,
    _wait_port,
    service_entry,
    spawn,
    state_lock,
)
from movie_platform.stack_secrets import write_private

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def token_file(stack: Stack) -> Path:
    return stack.state_dir / "lab_token"


def lab_token(stack: Stack) -> str:
    """The server's token: read from `lab_token`, created (mode 0600) on first use."""
    path = token_file(stack)
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32))
    path.chmod(0o600)
    return path.read_text().strip()


def lab_url(stack: Stack) -> str:
    """Where the lab serves, without the token (this is what stack.json and `status` show)."""
    return f"http://127.0.0.1:{stack.port('lab')}/lab"


def start_lab(stack: Stack, log=print) -> str:
    """Bring the stack up (idempotent), then JupyterLab unless ours already serves; returns the URL with its token."""
    stack_env = stack.up(log=log)
    token = lab_token(stack)
    port = stack.port("lab")
    with state_lock(stack.lock_file, log):
        svc = stack.load().get("services", {}).get("lab")
        if stack.owns("lab", svc) and _port_open(port):
            log(f"lab already running (pid {svc['pid']})")
        else:
            if _port_open(port):
                raise StackError(
                    f"lab: port {port} on 127.0.0.1 is taken by a process this stack did not start. "
                    "Stop that process or set MOVIE_LAB_PORT to a free port."
                )
            _spawn_lab(stack, stack_env, port, log)
    return f"{lab_url(stack)}?token={token}"


def _spawn_lab(stack: Stack, stack_env: dict[str, str], port: int, log) -> None:
    runtime = stack.state_dir / "lab_runtime"  # connection files of the server and its kernels
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}  # JUPYTER_TOKEN would win over the file
    env.update(stack_env)
    env.update(
        MOVIE_PLATFORM_STATE_DIR=str(stack.state_dir),  # notebooks fall back to this stack (movie_platform.notebook)
        JUPYTER_TOKEN_FILE=str(token_file(stack)),
        JUPYTER_RUNTIME_DIR=str(runtime),
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.root_dir={NOTEBOOKS_DIR}",
        # No calls home from a laptop or CI: update checks and news need the internet.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses that unless told
        cmd.append("--allow-root")
    log_file = stack.state_dir / "lab.log"
    pid = spawn(cmd, log_file, env, cwd=NOTEBOOKS_DIR)  # kernels start there too, as the notebooks expect
    # Recorded before the wait (the caller holds the state lock): an interrupted start leaves a PID `down` stops.
    stack.record_process("lab", service_entry("lab", lab_url(stack), pid, log_file), lock=False)
    try:
        _wait_port(port, "lab", log_file, pid=pid)
    except BaseException:
        _terminate(pid)
        raise
    log(f"started lab (pid {pid}), log in {log_file}")
