"""When each asset runs by itself: declarative automation that works with mostly empty months.

Dagster's `eager()` waits until no parent partition is missing and looks only at the
latest month. Here most of the months since MOVIE_PARTITION_START are empty, a change
sync touches old months, and `online_features` depends on all 444 of them, so eager
never fires. These conditions keep eager's guards (nothing in progress, nothing asked
twice) and drop the two that do not fit.
"""

from __future__ import annotations

import os

import dagster as dg

AC = dg.AutomationCondition
DEFAULT_TRAINING_CRON = "0 4 * * 1"  # Mondays 04:00 UTC; MOVIE_TRAINING_CRON overrides it
SENSOR_NAME = "default_automation_condition_sensor"
DEFAULT_AUTOMATION_INTERVAL_S = 30
UNPARTITIONED = dg.AssetSelection.assets("feast_definitions", "movie_rating_model")


def since_own_request(trigger: dg.AutomationCondition) -> dg.AutomationCondition:
    """`trigger` since this asset was last requested (or since the sensor's first tick).

    Not since_last_handled(): the child's own materialization would count as handling a parent
    update that landed while its run was past reading its input. And not a plain
    since(newly_requested()): that reset is true on the tick after the request, the same tick
    that sees a parent update landed after it, and Dagster lets the reset win.
    """
    return trigger.since(AC.initial_evaluation() | (AC.newly_requested() & ~trigger))


def not_running() -> dg.AutomationCondition:
    return (~AC.in_progress() & ~AC.any_deps_in_progress()).with_label("nothing_in_progress")


def follows_parent_months() -> dg.AutomationCondition:
    """A month re-runs when its own parent month updated (or will this tick); months of missing parents wait.

    eager() minus `in_latest_time_window`: a sync that changes a 2023 movie re-runs 2023's month.
    Its missing-parents clause stays: for a monthly child it asks only about the same month.
    """
    return (since_own_request(AC.any_deps_updated()) & ~AC.any_deps_missing() & not_running()).with_label(
        "follows_parent_months"
    )


def after_new_parent_data() -> dg.AutomationCondition:
    """An unpartitioned asset re-runs once its parents have new data, after they finished.

    Without eager's missing clause (the 420 never-crawled months would block it forever), and
    without counting parents that are only requested this tick: their run has not written yet.
    """
    updated = AC.any_deps_match(AC.newly_updated() & ~AC.executed_with_root_target())
    # An unpartitioned parent (feast_definitions) must exist, not only be requested this tick (its run would
    # race this one); missing months of a monthly parent do not block.
    monthly = dg.AssetSelection.all().materializable() - UNPARTITIONED
    unpartitioned_parent_missing = AC.any_deps_match(AC.missing()).ignore(monthly)
    return (since_own_request(updated) & ~unpartitioned_parent_missing & not_running()).with_label(
        "after_new_parent_data"
    )


def when_definitions_change() -> dg.AutomationCondition:
    """`feast apply` when the Feast definitions' version (the asset's code version) changes, and the first time
    feature rows land (before that there is nothing to serve)."""
    # Annotated: Dagster types these operands per asset key, and since_last_handled() per asset or check key.
    first_rows = AC.missing() & AC.any_deps_match(AC.newly_updated())
    changed: dg.AutomationCondition = AC.code_version_changed() | first_rows
    return (changed.since_last_handled() & ~AC.in_progress()).with_label("when_definitions_change")


def on_training_cron(cron: str | None = None) -> dg.AutomationCondition:
    """Train on a cron tick, whatever the parents did (on_cron would wait for all 444 months to update)."""
    schedule = cron or os.environ.get("MOVIE_TRAINING_CRON") or DEFAULT_TRAINING_CRON
    tick: dg.AutomationCondition = AC.cron_tick_passed(schedule)
    return (tick.since_last_handled() & not_running()).with_label(f"on_training_cron({schedule})")


def conditions() -> dict[str, dg.AutomationCondition]:
    """Asset key -> its automation condition (movies_raw is driven by crawls, syncs and schedules)."""
    return {
        "movies_raw_backup": follows_parent_months(),
        "movies_clean": follows_parent_months(),
        "eda_stats": follows_parent_months(),
        "movie_features": follows_parent_months(),
        "feast_definitions": when_definitions_change(),
        "online_features": after_new_parent_data(),
        "movie_rating_model": on_training_cron(),
        # a new model version (champion or not: the asset asks MLflow) or new features of that month
        "movie_rating_predictions": follows_parent_months(),
    }


def automation_sensor(environ=os.environ) -> dg.AutomationConditionSensorDefinition:
    """Dagster's automation sensor, running by default; MOVIE_AUTOMATION=off ships it stopped."""
    off = (environ.get("MOVIE_AUTOMATION") or "on").lower() in ("off", "0", "false", "no")
    return dg.AutomationConditionSensorDefinition(
        SENSOR_NAME,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.STOPPED if off else dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=automation_interval_s(environ),
        description="Evaluates every asset's automation condition (movie_assets/automation/conditions.py) "
        "and launches what they ask for. Stop it here, or set MOVIE_AUTOMATION=off before the code location loads.",
    )


def automation_interval_s(environ=os.environ) -> int:
    """Seconds between the sensor's evaluations (MOVIE_AUTOMATION_INTERVAL_SECONDS, default 30).

    Each hop of the graph (sync -> clean -> features -> online -> predictions) waits for one
    evaluation, so a shorter interval catches up sooner at the cost of more daemon work.
    """
    raw = environ.get("MOVIE_AUTOMATION_INTERVAL_SECONDS") or str(DEFAULT_AUTOMATION_INTERVAL_S)
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ValueError(f"MOVIE_AUTOMATION_INTERVAL_SECONDS must be a whole number of seconds >= 1, got {raw!r}")
    return seconds
