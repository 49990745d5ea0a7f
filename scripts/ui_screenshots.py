"""Screenshots of asset pages in the Dagster UI, for checking the EDA report by eye.

    make ui-screenshots            # stack up, eda_stats materialized, then shots in .movie_platform/screenshots/

Starts `dagster-webserver` on the running stack's instance, opens each asset page in
headless Chromium (Debian's, driven by Playwright), dismisses the welcome dialog,
opens the markdown metadata (summary table, plots) and saves one PNG per view.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from movie_platform.local_stack import REPO_ROOT, Stack

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def start_webserver(port: int, env: dict[str, str]) -> subprocess.Popen:
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    command = [webserver, "-m", "movie_assets", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("dagster-webserver did not come up within 90 s")


def shoot(port: int, asset: str, out_dir: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"http://127.0.0.1:{port}/assets/{asset}", wait_until="networkidle")
        skip = page.get_by_role("button", name="Skip")
        if skip.count():
            skip.first.click()
        page.get_by_text("Metadata").first.wait_for(timeout=30_000)
        shots.append(out_dir / f"{asset}_overview.png")
        page.screenshot(path=str(shots[-1]), full_page=True)
        for index in range(page.get_by_text("[Show Markdown]").count()):
            page.get_by_text("[Show Markdown]").nth(index).click()
            page.wait_for_timeout(1500)
            shots.append(out_dir / f"{asset}_markdown_{index + 1}.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--asset", nargs="+", default=["eda_stats", "movies_clean", "movies_raw"])
    parser.add_argument("--port", type=int, default=3333)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".movie_platform" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    env = {**os.environ, **Stack().env()}
    args.out.mkdir(parents=True, exist_ok=True)
    server = start_webserver(args.port, env)
    try:
        for asset in args.asset:
            for shot in shoot(args.port, asset, args.out, args.chromium):
                print(shot)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
