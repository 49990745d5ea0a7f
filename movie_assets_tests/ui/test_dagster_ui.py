"""The README's UI tour in a real Chromium, against `dagster dev` on the test stack.

`dagster dev` (webserver + daemon: the daemon runs backfills) serves an instance and a
PostgreSQL schema of the test's own, crawling the sample TMDB source (the suite's cheapest
real source: no network, the same catalogue the fake TMDB server serves). The browser

1. finds every asset key of the graph on the global lineage page,
2. backfills three movies_raw months through the Materialize dialog (click, type the range,
   launch); the daemon runs it and PostgreSQL then holds exactly those months' movies,
3. opens eda_stats, materialized from those rows, and sees its plots decoded as images,
4. sees every monthly check of movies_raw "Succeeded" on its *Checks* tab after the backfill (a range
   run used to leave them "Skipped" beside a "Passed"), blanks a title in the middle month, launches
   the job `monthly_checks` for that month from its *Launchpad* (the tab's *Execute* cannot run a
   partitioned check), and sees the one check that names the row fail for that month, in the list
   and the detail pane alike, while movies_clean's checks pass; a screenshot is kept.
"""

from __future__ import annotations

import contextlib
import re
import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import eda_stats, movies_clean
from movie_assets.checks import CHECK_JOB, MONTHLY_CHECKS
from movie_assets.definitions import defs
from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, release_month_partitions
from movie_assets.resources.tmdb_sample import TmdbSampleSource, sample_months
from movie_assets_tests.conftest import platform_resources, wait_for
from movie_assets_tests.integration.dagster_instance import own_instance_home
from movie_assets_tests.integration.test_ingest_assets import expected_rows
from movie_assets_tests.ui.dagster_dev import chromium_page, dagster_dev_env, running_dagster_dev, shown_on_failure

BACKFILL_TIMEOUT_S = 240
# Wide enough that the lineage's zoom-to-fit draws full asset nodes (full names, not "movie…_predictions").
VIEWPORT = {"width": 2600, "height": 1400}
PLOTS = {"vote_average_distribution.png", "movies_per_month.png", "genre_counts.png", "budget_vs_revenue.png"}
CHECK_ROW = '[class*="AssetChecks_checkRow__"]'  # a check of the Checks tab's list (Dagster 1.13.27's CSS module)
CHECK_RUN_TIMEOUT_S = 120


def three_sample_months() -> list[str]:
    """Three consecutive partition keys the sample has, from the partitions as the code defines them now."""
    sample = {f"{month:%Y-%m-%d}" for month in sample_months()}
    common = [key for key in release_month_partitions.get_partition_keys() if key in sample]
    assert len(common) >= 6, f"partitions and sample share only {common}"
    return common[3:6]


@pytest.fixture
def ui(stack_env, database, object_store, tmp_path):
    """`dagster dev` on a DAGSTER_HOME and schema of the test's own; stopped (SIGTERM, then SIGKILL) afterwards."""
    with own_instance_home(stack_env["MOVIE_DB_URL"], tmp_path / "dagster_home", "dagster_ui") as home:
        # Only what the test launches runs: no automation, change sync or retraining on their own.
        env = dagster_dev_env(home, database, object_store, MOVIE_AUTOMATION="off")
        with running_dagster_dev(env, home, tmp_path) as ui:
            yield ui


@pytest.fixture
def page(tmp_path):
    with chromium_page(tmp_path, VIEWPORT) as page:
        yield page


def check_lineage(page, ui: dict) -> None:
    page.goto(f"{ui['url']}/asset-groups")
    page.locator("button", has_text="Materialize all").wait_for()
    page.locator("svg foreignObject").first.wait_for()
    keys = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    # Groups open collapsed; ⌥E ("Expand all groups" in the graph's settings) opens them all.
    for _ in range(2):
        page.keyboard.press("Alt+e")
        with contextlib.suppress(Exception):
            page.get_by_text(keys[0], exact=True).wait_for(timeout=10_000)
            break
    missing = [key for key in keys if not page.get_by_text(key, exact=True).is_visible()]
    assert not missing, f"asset keys not on the lineage page: {missing} (of {keys})"


def launch_backfill(page, ui: dict, months: list[str]) -> str:
    """Asset page -> Materialize… -> type the range -> Launch backfill; returns the backfill's id."""
    page.goto(f"{ui['url']}/assets/movies_raw")
    page.locator("button", has_text="Materialize").first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize movies_raw")
    selection = dialog.get_by_placeholder(re.compile("^ex: "))
    selection.fill(f"[{months[0]}...{months[-1]}]")
    selection.press("Tab")
    dialog.get_by_text(f"{len(months)} partitions", exact=True).wait_for()
    dialog.get_by_role("button", name="Launch backfill").click()
    created = page.get_by_text(re.compile(r"^Created backfill \w+$"))
    created.wait_for()
    return created.inner_text().split()[-1]


def wait_for_backfill_run(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    """The backfill's runs once they finished (one: single-run policy), polled from the instance the daemon shares.

    Waiting for the run, not the backfill's status, saves the daemon's next 30 s tick; a backfill
    that failed before launching a run ends the wait too.
    """
    runs_filter = dg.RunsFilter(tags={"dagster/backfill": backfill_id})

    def finished() -> bool:
        backfill = instance.get_backfill(backfill_id)
        if backfill is None or backfill.status.value in ("FAILED", "COMPLETED_FAILED", "CANCELED"):
            return True
        runs = instance.get_runs(filters=runs_filter)
        return bool(runs) and all(run.is_finished for run in runs)

    wait_for(finished, BACKFILL_TIMEOUT_S, f"the run of backfill {backfill_id} to finish", interval=1)
    return instance.get_runs(filters=runs_filter)


def stored_ids_by_month(database) -> dict[str, set[int]]:
    query = sql.SQL("select release_month, movie_id from {}").format(database.ident("movies_raw"))
    with psycopg.connect(database.url) as conn:
        rows = conn.execute(query).fetchall()
    by_month: dict[str, set[int]] = {}
    for month, movie_id in rows:
        by_month.setdefault(f"{month:%Y-%m-%d}", set()).add(movie_id)
    return by_month


def check_eda_plots(page, ui: dict) -> None:
    page.goto(f"{ui['url']}/assets/eda_stats")
    page.locator("tr", has=page.get_by_text("plots", exact=True)).get_by_text("[Show Markdown]").click()
    images = page.get_by_role("dialog").filter(has_text="plots").locator("img")
    images.first.wait_for()
    # Decoded, not only present: a broken data URI leaves an <img> with naturalWidth 0.
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=dialog] img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    shown = {images.nth(i).get_attribute("alt") for i in range(images.count())}
    assert shown == PLOTS, f"plots shown: {shown}"


def monthly_checks_of(asset: str) -> list[str]:
    return [check.name for check in MONTHLY_CHECKS if check.asset == asset]


def listed_check_statuses(page, ui: dict, asset: str) -> dict[str, str]:
    """The Checks tab's list: check -> the status under its name (a row reads "name\nname\nStatus")."""
    page.goto(f"{ui['url']}/assets/{asset}?view=checks")
    rows = page.locator(CHECK_ROW)
    rows.first.wait_for()
    return {lines[0]: lines[-1] for lines in (rows.nth(i).inner_text().splitlines() for i in range(rows.count()))}


def latest_execution(page, check: str) -> tuple[str, str]:
    """Select `check` in the list; the detail pane's (evaluation result, partition) of its latest execution."""
    page.locator(CHECK_ROW).filter(has=page.get_by_text(check, exact=True).first).click()
    page.wait_for_url(re.compile(f"checkDetail={check}"))
    result = page.get_by_text("Evaluation result", exact=True).locator("..")
    partition = page.get_by_text("Partition", exact=True).locator("..")
    return result.inner_text().splitlines()[-1], partition.inner_text().splitlines()[-1]


def launch_monthly_checks(page, ui: dict, month: str) -> str:
    """Job monthly_checks -> Launchpad -> pick the month -> Launch Run; returns the run's id."""
    page.goto(f"{ui['url']}/locations/movie_assets/jobs/{CHECK_JOB}/playground")
    picker, item = page.get_by_placeholder("Partition"), page.get_by_role("menuitem", name=month)
    for _ in range(3):  # Dagster's welcome dialog, on a timer, closes the picker's menu when it opens
        picker.click()
        picker.fill(month)
        with contextlib.suppress(Exception):
            item.click(timeout=5_000)
            break
    page.get_by_text(f"partition: {month}").or_(page.get_by_text(f"dagster/partition: {month}")).first.wait_for()
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    return page.url.rsplit("/", 1)[-1].split("?")[0]


def check_monthly_checks(page, ui: dict, database, months: list[str], tmp_path) -> None:
    raw_checks = monthly_checks_of("movies_raw")
    listed = listed_check_statuses(page, ui, "movies_raw")
    assert {check: listed.get(check) for check in raw_checks} == dict.fromkeys(raw_checks, "Succeeded"), listed
    assert latest_execution(page, raw_checks[0]) == ("Passed", months[-1])

    month = months[1]
    query = sql.SQL(
        "update {t} set title = ' ' where movie_id = (select min(movie_id) from {t} where release_month = %s) "
        "returning movie_id"
    ).format(t=database.ident("movies_raw"))
    with psycopg.connect(database.url) as conn:
        (blanked,) = conn.execute(query, (month,)).fetchone()
    run_id = launch_monthly_checks(page, ui, month)
    instance = ui["instance"]
    wait_for(lambda: instance.get_run_by_id(run_id).is_finished, CHECK_RUN_TIMEOUT_S, f"run {run_id}", interval=1)
    # It fails: the blank title fails a blocking check (and movie_features, never built here, has no table).
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE

    listed = listed_check_statuses(page, ui, "movies_raw")
    expected = {check: "Failed" if check == "ids_and_titles_present" else "Succeeded" for check in raw_checks}
    assert {check: listed.get(check) for check in raw_checks} == expected, listed
    assert latest_execution(page, "ids_and_titles_present") == ("Failed", month)
    assert page.get_by_text(f"[{blanked}]", exact=True).is_visible()  # bad_movie_ids, in the detail's metadata
    screenshot = tmp_path / "monthly-checks.png"
    page.screenshot(path=str(screenshot))
    print(f"screenshot: {screenshot}")
    clean_checks = monthly_checks_of("movies_clean")
    listed = listed_check_statuses(page, ui, "movies_clean")
    assert {check: listed.get(check) for check in clean_checks} == dict.fromkeys(clean_checks, "Succeeded"), listed
    assert latest_execution(page, clean_checks[0]) == ("Passed", month)


def test_ui_tour_lineage_backfill_dialog_eda_plots_and_monthly_checks_in_chromium(
    ui, page, database, object_store, tmp_path
):
    timings, started = {}, time.monotonic()
    with shown_on_failure(page, ui, "global lineage"):
        check_lineage(page, ui)
    timings["lineage"] = time.monotonic() - started

    months = three_sample_months()
    with shown_on_failure(page, ui, "backfill dialog"):
        backfill_id = launch_backfill(page, ui, months)
    timings["dialog"] = time.monotonic() - started
    runs = wait_for_backfill_run(ui["instance"], backfill_id)
    timings["backfill run"] = time.monotonic() - started
    backfill = ui["instance"].get_backfill(backfill_id)
    assert [run.status.value for run in runs] == ["SUCCESS"], f"backfill {backfill.status.value}: {runs}"
    assert [(r.tags.get(RANGE_START_TAG), r.tags.get(RANGE_END_TAG)) for r in runs] == [(months[0], months[-1])]
    stored = stored_ids_by_month(database)
    assert sorted(stored) == months, f"movies_raw holds months {sorted(stored)}, the backfill was {months}"
    for month in months:
        assert stored[month] == expected_rows([month])[0], f"{month}: not the sample's movies"

    # eda_stats from the backfilled rows, in process on the same instance and schema (seconds, no crawl);
    # in a thread of its own, away from the event loop of Playwright's sync API.
    with ThreadPoolExecutor(1) as worker:
        result = worker.submit(
            dg.materialize,
            [movies_raw, movies_clean, eda_stats],
            selection=[movies_clean, eda_stats],
            resources=platform_resources(database, object_store, TmdbSampleSource()),
            tags={RANGE_START_TAG: months[0], RANGE_END_TAG: months[-1]},
            instance=ui["instance"],
        ).result()
    assert result.success
    with shown_on_failure(page, ui, "eda_stats plots"):
        check_eda_plots(page, ui)
    timings["eda plots"] = time.monotonic() - started
    with shown_on_failure(page, ui, "monthly checks"):
        check_monthly_checks(page, ui, database, months, tmp_path)
    timings["monthly checks"] = time.monotonic() - started
    print("UI tour, seconds since dagster dev answered:", {step: round(t, 1) for step, t in timings.items()})
