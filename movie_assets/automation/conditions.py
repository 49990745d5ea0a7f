"""When each asset runs by itself: level-triggered conditions, built on Dagster's declarative automation.

A partition is out of date when one of its input partitions was materialized after its own
stored value was computed (`staleness.InputsNewer`, which reads the event log as it is now).
So the first tick after a sync run by hand, a daemon that was down for hours or a backfill
from the CLI all lead to the same requests, and once every store is current nothing runs.
Dagster's guards stay around it: nothing requested while it or an input is in progress or
about to be requested, and a partition whose runs failed MOVIE_AUTOMATION_MAX_ATTEMPTS times
since its newest input waits (the Automation page names the sub-condition that held it).

A month whose input month failed a blocking storage check on its newest value waits too
(`input_blocking_check_failed`), whichever run wrote it: a crawl's check steps, or the checks
the sync and restore jobs log for each month they write (`checks.log_checked_materializations`).
It waits as well while the run that wrote the input month is still going and has not checked it
yet (`input_checks_not_in_yet`). A newer materialization of the input, or a passing re-run of the
check, lets it go.

Dagster's `eager()` would also wait until no parent partition is missing and look only at the
latest month; most months since MOVIE_PARTITION_START are empty and a change sync touches old
months, so those two clauses are left out.
"""

from __future__ import annotations

import os
import warnings

import dagster as dg

from movie_assets.automation.staleness import (
    CodeVersionDiffers,
    FailedTooOften,
    InputCheckFailed,
    InputChecksPending,
    InputRequestedThisTick,
    InputsNewer,
    NotBuiltSinceCronTick,
)
from movie_assets.settings import SettingError

AC = dg.AutomationCondition
# The level-triggered operands are our Python, so the sensor runs in the code server; Dagster flags the
# parameter as beta each time the sensor is built (once per `movie-platform demo`'s console, for one).
warnings.filterwarnings("ignore", message="Parameter `use_user_code_server`", category=dg.BetaWarning)
DEFAULT_TRAINING_CRON = "0 4 * * 1"  # Mondays 04:00 UTC; MOVIE_TRAINING_CRON overrides it
SENSOR_NAME = "default_automation_condition_sensor"
DEFAULT_AUTOMATION_INTERVAL_S = 30
UNPARTITIONED = dg.AssetSelection.assets("feast_definitions", "movie_rating_model")
SUBSET_PLANS = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"  # staleness.py reads one plan per partition


def not_running() -> dg.AutomationCondition:
    """Neither it nor an input is running, and no unpartitioned input is requested this tick.

    It comes first in every condition: Dagster evaluates an AND's operands in order, so a run that
    ends between this check and the event-log reads after it shows up there as materialized, never
    as a plan without a result that would be asked for again.

    A monthly input requested this tick is not a reason to wait: Dagster puts the month's
    requests in one run, which materializes the input first.
    """
    return (~AC.in_progress() & ~AC.any_deps_in_progress() & ~InputRequestedThisTick(True)).with_label(
        "nothing_in_progress"
    )


def out_of_date() -> dg.AutomationCondition:
    """Inputs newer than the stored value, and not given up on after repeated failures."""
    return (InputsNewer() & ~FailedTooOften()).with_label("out_of_date")


def input_held() -> dg.AutomationCondition:
    """An input partition it would read failed a blocking storage check on its newest value, or the run that
    wrote that value has not checked it yet (the checks of an op job, sync or restore, follow its writes)."""
    return (InputCheckFailed() | InputChecksPending()).with_label("input_held_by_blocking_checks")


def follows_parent_months() -> dg.AutomationCondition:
    """A month re-runs when its input months are newer than it, or are requested this tick (same run), or
    its code version (movie_features: the feature set) differs from the one it was built with.

    Months whose inputs are missing (and not requested) wait, and so do months whose input month failed
    a blocking check: a bad month is not carried down. An input requested this tick is rebuilt in the
    same run, whose own blocking checks stop the steps below a failure.
    """
    inputs_requested = AC.any_deps_match(AC.will_be_requested()).ignore(UNPARTITIONED)
    own = (out_of_date() | (CodeVersionDiffers() & ~FailedTooOften())) & ~input_held()
    return (not_running() & ~AC.any_deps_missing() & (own | inputs_requested)).with_label("follows_parent_months")


def after_new_parent_data() -> dg.AutomationCondition:
    """An unpartitioned asset re-runs once any input month is newer than it (missing months do not block).

    It waits while an input month is requested this tick (that run has not written yet), and while an
    input month newer than it failed a blocking check or is not checked yet.
    """
    return (
        not_running() & ~inputs_requested() & ~unpartitioned_parent_missing() & out_of_date() & ~input_held()
    ).with_label("after_new_parent_data")


def inputs_requested() -> dg.AutomationCondition:
    """Any input requested this tick, whatever run it goes to (not only inputs that could share this run)."""
    return InputRequestedThisTick(False)


def unpartitioned_parent_missing() -> dg.AutomationCondition:
    """An unpartitioned input (feast_definitions) does not exist yet; missing months of a monthly one do not count."""
    monthly = dg.AssetSelection.all().materializable() - UNPARTITIONED
    return AC.any_deps_match(AC.missing()).ignore(monthly)


def when_definitions_change() -> dg.AutomationCondition:
    """`feast apply` when the Feast definitions' version (the asset's code version) differs from the applied one,
    and the first time feature rows exist (before that there is nothing to serve)."""
    first_rows = AC.missing() & InputsNewer()
    changed = CodeVersionDiffers() | first_rows
    return (~AC.in_progress() & changed & ~FailedTooOften()).with_label("when_definitions_change")


def on_training_cron(cron: str | None = None) -> dg.AutomationCondition:
    """Train when the newest cron tick came after the newest model (or there is none), once the features exist.

    Level-triggered like the rest: a tick missed while the daemon was down is caught up on its next evaluation.
    """
    schedule = cron or os.environ.get("MOVIE_TRAINING_CRON") or DEFAULT_TRAINING_CRON
    try:
        dg.AutomationCondition.cron_tick_passed(schedule)  # Dagster's own check of a cron string
    except Exception:  # noqa: BLE001 - Dagster raises its invariant error; the variable is what to name
        raise SettingError(
            f"MOVIE_TRAINING_CRON={schedule!r} is no cron schedule: give five fields, like {DEFAULT_TRAINING_CRON!r} "
            "(Mondays 04:00 UTC)"
        ) from None
    due = NotBuiltSinceCronTick(schedule) & ~FailedTooOften(schedule)
    return (not_running() & ~inputs_requested() & ~unpartitioned_parent_missing() & due).with_label(
        f"on_training_cron({schedule})"
    )


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
    if environ.get(SUBSET_PLANS):
        raise ValueError(
            f"{SUBSET_PLANS} is set: Dagster then plans a run's partitions in one event without a partition, and "
            "the automation (movie_assets/automation/staleness.py) could no longer tell when a month's run started "
            "or count its failures. Unset it."
        )
    off = (environ.get("MOVIE_AUTOMATION") or "on").lower() in ("off", "0", "false", "no")
    return dg.AutomationConditionSensorDefinition(
        SENSOR_NAME,
        target=dg.AssetSelection.all(),
        use_user_code_server=True,  # the level-triggered operands are Python of ours (staleness.py)
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
