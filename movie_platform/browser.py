"""The Dagster UI in Debian's Chromium, driven by Playwright: shared by `make ui-screenshots` and the UI test.

Playwright's own browser downloads are unreachable here, so it drives `/usr/bin/chromium`
(`make test` and `make ui-screenshots` apt-get install it) with flags that keep a headless
Chromium off the network and the GPU. The UI servers start in their own process group, so
whoever started one stops it with all its children (code server, daemon, run workers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from movie_platform.local_stack import REPO_ROOT, tail

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_START_TIMEOUT_S = 180


def chromium_path() -> str:
    """Debian's Chromium; the error says how to install it (Playwright's download is unreachable)."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("chromium not found: `make .venv/.chromium` (or `apt-get install -y chromium`) installs it")
    return path


def launch_chromium(playwright, executable: str | None = None):
    """A headless Chromium browser (Playwright `Browser`) on Debian's binary."""
    return playwright.chromium.launch(executable_path=executable or chromium_path(), args=CHROMIUM_FLAGS)


def dev_command(port: int) -> list[str]:
    """`dg dev` (webserver + daemon) on the `movie_assets` module, on loopback.

    `dg dev`, not `dagster dev`, which Dagster 1.13 marks superseded and warns about at every
    start. With `-m` it starts the same webserver and daemon on the same instance (DAGSTER_HOME)
    and code location name (`movie_assets`), in the same process tree, so stopping it is unchanged.
    """
    dg = str(Path(sys.executable).with_name("dg"))
    return [dg, "dev", "-m", "movie_assets", "-h", "127.0.0.1", "-p", str(port)]


def start_dagster_ui(
    port: int, env: Mapping[str, str], log_file: Path, command: str = "dev", cwd: Path | None = None
) -> subprocess.Popen:
    """`dg dev` (webserver + daemon) or `dagster-webserver` on `movie_assets`, in a process group of its own.

    Returns once `/server_info` answers; if the server exits or stays silent, it is stopped
    and the error carries the tail of its log.
    """
    if command == "dev":
        cmd = dev_command(port)
    else:
        webserver = str(Path(sys.executable).with_name("dagster-webserver"))
        cmd = [webserver, "-m", "movie_assets", "-h", "127.0.0.1", "-p", str(port)]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            cwd=cwd or env.get("DAGSTER_HOME") or REPO_ROOT,  # see `movie-platform dev`
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + UI_START_TIMEOUT_S
    while time.monotonic() < deadline and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_ui(proc)
    raise RuntimeError(f"`{' '.join(cmd[-7:])}` did not come up within {UI_START_TIMEOUT_S} s:\n{tail(log_file, 30)}")


def stop_ui(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the UI's process group, SIGKILL to whatever is left after `timeout` (we started them all)."""
    import signal

    stop_process_group(proc, signal.SIGTERM, timeout)


def stop_process_group(proc: subprocess.Popen, sig: int, timeout: float = 30) -> None:
    """`sig` to a process group we started (start_new_session=True), SIGKILL to what is left after `timeout`.

    The leader is waited for without being reaped, so its pid (the group's id) cannot be reused
    before the stragglers (a code server that ignores SIGTERM) get the SIGKILL.
    """
    import signal

    if proc.returncode is not None:
        return
    os.killpg(proc.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def dismiss_welcome(page) -> None:
    """Skip the "Join the Dagster community" dialog whenever it shows (it opens on a timer, over any page).

    Playwright runs the handler before each action that the dialog would block.
    """
    page.add_locator_handler(
        page.get_by_text("Join the Dagster community"), lambda: page.get_by_role("button", name="Skip").click()
    )
