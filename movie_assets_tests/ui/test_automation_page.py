"""The Automation page says, in our condition's words, why a partition was requested (issue 26), in a real Chromium.

`dagster dev` (webserver + daemon) serves an instance and a PostgreSQL schema of the test's own,
with the automation sensor on and evaluating every 5 s. Before it starts, the instance gets
runless materializations: `movies_raw` and `movies_clean` for two sample months, then `movies_raw`
once more for the older one, so exactly that month's `movies_clean` is out of date. The instance's
queue launches nothing (`max_concurrent_runs: 0`): what the sensor asks for stays queued, and the
evaluation record is what the page shows. In the browser, on movies_clean's Automation tab:

1. the evaluation that requested something lists the stale month as its one requested partition;
2. its condition tree names our sub-conditions (`follows_parent_months`, `out_of_date`,
   `inputs_newer_than_stored`, `nothing_in_progress`, `failed_3_times_since_inputs_changed`);
3. `inputs_newer_than_stored` is true for the stale month alone, the give-up condition for none.

The page shows condition names (Dagster's GraphQL node has a label, no description), so the
check is on the name.
"""

from __future__ import annotations

import re
import time

import dagster as dg
import pytest
from playwright.sync_api import expect

from movie_assets.automation.staleness import InputsNewer, max_attempts
from movie_assets.partitions import release_month_partitions
from movie_assets.resources.tmdb_sample import sample_months
from movie_assets_tests.conftest import wait_for
from movie_assets_tests.integration.dagster_instance import own_instance_home
from movie_assets_tests.ui.dagster_dev import chromium_page, dagster_dev_env, running_dagster_dev, shown_on_failure

VIEWPORT = {"width": 1800, "height": 1300}
LOADING = "Loading partition keys"  # what a partitions popover shows until the UI has fetched them
CLEAN = dg.AssetKey("movies_clean")
EVALUATION_TIMEOUT_S = 90
OUR_REASON = InputsNewer().name  # "inputs_newer_than_stored"
GAVE_UP = f"failed_{max_attempts()}_times_since_inputs_changed"
OUR_LABELS = ["follows_parent_months", "out_of_date", OUR_REASON, "nothing_in_progress", GAVE_UP]


def two_sample_months() -> tuple[str, str]:
    """The two newest partition keys the sample has: (the one made stale, the one left current)."""
    sample = {f"{month:%Y-%m-%d}" for month in sample_months()}
    common = [key for key in release_month_partitions.get_partition_keys() if key in sample]
    assert len(common) >= 2, f"partitions and sample share only {common}"
    return common[-2], common[-1]


def report(instance: dg.DagsterInstance, asset: str, month: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=month))


def launch_nothing(home) -> None:
    """The queued run coordinator of dagster.yaml keeps every run queued ("0 stops any runs from launching")."""
    yaml = home / "dagster.yaml"
    text = yaml.read_text()
    assert "\nconcurrency:\n" in text, text
    yaml.write_text(text.replace("\nconcurrency:\n", "\nconcurrency:\n  runs:\n    max_concurrent_runs: 0\n", 1))


@pytest.fixture
def ui(stack_env, database, object_store, tmp_path):
    """`dagster dev` with automation on, on an instance where one month of movies_clean is out of date."""
    with own_instance_home(stack_env["MOVIE_DB_URL"], tmp_path / "dagster_home", "dagster_automation") as home:
        launch_nothing(home)
        stale, current = two_sample_months()
        instance = dg.DagsterInstance.from_config(str(home))
        for asset in ("movies_raw", "movies_clean"):
            for month in (stale, current):
                report(instance, asset, month)
        report(instance, "movies_raw", stale)  # newer than stale's movies_clean: that month alone is out of date

        instance.dispose()
        env = dagster_dev_env(home, database, object_store, MOVIE_AUTOMATION_INTERVAL_SECONDS="5")
        env.pop("MOVIE_AUTOMATION", None)  # on, its default
        with running_dagster_dev(env, home, tmp_path) as ui:
            yield {**ui, "stale": stale, "current": current}


@pytest.fixture
def page(tmp_path):
    with chromium_page(tmp_path, VIEWPORT) as page:
        yield page


def wait_for_requesting_evaluation(instance: dg.DagsterInstance, log_file) -> None:
    """Until the sensor has stored an evaluation of movies_clean that requested something."""

    def requested() -> bool:
        records = instance.schedule_storage.get_auto_materialize_asset_evaluations(CLEAN, limit=20)
        return any(r.get_evaluation_with_run_ids().evaluation.true_subset.size for r in records)

    wait_for(requested, EVALUATION_TIMEOUT_S, "an automation evaluation that requests movies_clean", log_file, 1)


def popover(page, has_text: str):
    return page.locator(".bp5-popover-content").filter(has_text=has_text)


def condition_rows(dialog, label: str) -> list:
    """The rows of the evaluation tree whose condition is exactly `label` (not a NOT/AND around it)."""
    rows = dialog.locator("tr")
    rows.first.wait_for()
    cells = rows.evaluate_all("rows => rows.map(r => (r.cells[0] ? r.cells[0].innerText : '').trim())")
    return [rows.nth(i) for i, text in enumerate(cells) if text == label]


def test_automation_page_names_our_reason_for_the_requested_month(ui, page, tmp_path):
    stale, current = ui["stale"], ui["current"]
    started = time.monotonic()
    wait_for_requesting_evaluation(ui["instance"], ui["log"])
    print(f"the sensor requested movies_clean {time.monotonic() - started:.1f}s after dagster dev answered")

    with shown_on_failure(page, ui, "evaluation list"):
        page.goto(f"{ui['url']}/assets/movies_clean?view=automation")
        requested = re.compile(r"^\d+ requested$")
        requesting = page.locator("tr", has=page.get_by_text(requested)).first
        requesting.wait_for()
        requesting.get_by_text(requested).click()
        listed = popover(page, "Requested partitions")
        listed.wait_for()
        expect(listed).not_to_contain_text(LOADING, timeout=30_000)  # the keys arrive after the popover opens
        assert stale in listed.inner_text(), listed.inner_text()
        assert current not in listed.inner_text(), f"{current} is current, yet requested: {listed.inner_text()}"
        page.keyboard.press("Escape")
        listed.wait_for(state="hidden")

    with shown_on_failure(page, ui, "evaluation tree"):
        requesting.get_by_role("button").first.click()  # the row's timestamp opens the evaluation
        dialog = page.get_by_role("dialog").filter(has_text=re.compile(r"movies_clean\s*@"))
        dialog.get_by_text(OUR_REASON, exact=True).wait_for()
        for label in OUR_LABELS:
            assert dialog.get_by_text(label, exact=True).count() >= 1, f"{label} not in the evaluation tree"
        gave_up = condition_rows(dialog, GAVE_UP)
        assert gave_up and all("0 True" in row.inner_text() for row in gave_up), [r.inner_text() for r in gave_up]
        reasons = condition_rows(dialog, OUR_REASON)
        assert reasons, f"no row for {OUR_REASON}"
        reason = reasons[0]
        assert "1 True" in reason.inner_text(), reason.inner_text()
        reason.get_by_text("1 True").click()
        partitions = popover(page, "1 partition")
        partitions.wait_for()
        expect(partitions).not_to_contain_text(LOADING, timeout=30_000)
        assert stale in partitions.inner_text(), partitions.inner_text()
        assert current not in partitions.inner_text(), f"{OUR_REASON} true for {current}: {partitions.inner_text()}"
        page.locator(".bp5-popover-enter-done", has_text="1 partition").wait_for()  # faded in, for the picture
        screenshot = tmp_path / "automation-evaluation.png"
        page.screenshot(path=str(screenshot))
        print(f"screenshot: {screenshot}")

    # Whatever the sensor's backfill has submitted so far (often nothing yet) stayed queued: nothing ran here.
    runs = ui["instance"].get_runs()
    assert all(run.status == dg.DagsterRunStatus.QUEUED for run in runs), [(r.run_id, r.status) for r in runs]
    print(f"Automation page checked {time.monotonic() - started:.1f}s after dagster dev answered; {len(runs)} runs yet")
