"""Screenshots of asset pages in the Dagster UI, for checking the EDA report by eye.

    make ui-screenshots            # stack up, eda_stats materialized, then shots in .movie_platform/screenshots/

Starts `dagster-webserver` on the running stack's instance, opens each asset page in
headless Chromium (Debian's, driven by Playwright: movie_platform/browser.py), skips the welcome dialog,
opens the markdown metadata (summary table, plots) and saves one PNG per view.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from movie_platform.browser import dismiss_welcome, launch_chromium, start_dagster_ui, stop_ui
from movie_platform.local_stack import REPO_ROOT, Stack


def shoot(port: int, asset: str, out_dir: Path, chromium: str | None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as pw:
        browser = launch_chromium(pw, chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        dismiss_welcome(page)
        page.goto(f"http://127.0.0.1:{port}/assets/{asset}", wait_until="networkidle")
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
    parser.add_argument("--chromium", default=None, help="default: chromium on PATH (Debian's)")
    args = parser.parse_args()
    env = {**os.environ, **Stack().env()}
    args.out.mkdir(parents=True, exist_ok=True)
    server = start_dagster_ui(args.port, env, args.out / "dagster-webserver.log", command="webserver")
    try:
        for asset in args.asset:
            for shot in shoot(args.port, asset, args.out, args.chromium):
                print(shot)
    finally:
        stop_ui(server)


if __name__ == "__main__":
    main()
