"""Sensors: the hourly TMDB change sync, and a Slack-compatible alert to ALERT_WEBHOOK_URL for a failed run."""

import os

import dagster as dg
import requests

from movie_assets.settings import Settings, redact_text


def alert_text(context: dg.RunFailureSensorContext) -> str:
    """Asset(s), partition, the first step error and a link to the run in the UI (DAGSTER_UI_URL)."""
    run = context.dagster_run
    partition = run.tags.get("dagster/partition") or "..".join(
        filter(
            None,
            [run.tags.get("dagster/asset_partition_range_start"), run.tags.get("dagster/asset_partition_range_end")],
        )
    )
    assets = ", ".join(sorted(key.to_user_string() for key in run.asset_selection or [])) or run.job_name
    step_failures = context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    event = step_failures[0].dagster_event if step_failures else None  # of_type only returns Dagster events
    error = event.step_failure_data.error if event is not None else None
    while error is not None and error.cause is not None:  # Dagster wraps the user's exception
        error = error.cause
    summary = (
        error.message.strip().splitlines()[0] if error and error.message.strip() else context.failure_event.message
    ) or "no message"
    link = f"{os.environ.get('DAGSTER_UI_URL', 'http://127.0.0.1:3000').rstrip('/')}/runs/{run.run_id}"
    where = f" partition {partition}" if partition else ""
    return redact_text(
        f":red_circle: `{assets}`{where} failed (run `{run.run_id[:8]}` of `{run.job_name}`): {summary[:300]} "
        f"<{link}|open the run>"
    )


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run to the Slack-compatible webhook in ALERT_WEBHOOK_URL.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    url = os.environ["ALERT_WEBHOOK_URL"]
    response = requests.post(url, json={"text": alert_text(context)}, timeout=10)
    if response.status_code >= 400:
        raise RuntimeError(f"alert webhook answered {response.status_code}; check ALERT_WEBHOOK_URL")


SYNC_JOB = "sync_tmdb_changes"
DEFAULT_SYNC_INTERVAL_S = 3600


def sync_interval_s(environ=os.environ) -> int | None:
    """MOVIE_SYNC_INTERVAL_SECONDS: seconds between syncs (default an hour), or None for `off`."""
    raw = (environ.get("MOVIE_SYNC_INTERVAL_SECONDS") or "").strip()
    if raw.lower() == "off":
        return None
    if not raw:
        return DEFAULT_SYNC_INTERVAL_S
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"MOVIE_SYNC_INTERVAL_SECONDS={raw!r}: give a whole number of seconds (e.g. 3600) or off")
    return int(raw)


def sync_sensor_status(environ=os.environ) -> dg.DefaultSensorStatus:
    """On with the real API; with the sample, off until turned on (its simulated feed would re-run months hourly).

    MOVIE_SYNC_INTERVAL_SECONDS=off ships it stopped with the API too (a deployment that syncs otherwise).
    """
    on = Settings.from_env(environ).tmdb_source == "api" and sync_interval_s(environ) is not None
    return dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED


@dg.sensor(
    name="tmdb_changes_sensor",
    job_name=SYNC_JOB,
    minimum_interval_seconds=sync_interval_s() or DEFAULT_SYNC_INTERVAL_S,
    default_status=sync_sensor_status(),
    description="Runs sync_tmdb_changes every MOVIE_SYNC_INTERVAL_SECONDS (default an hour; off ships it "
    "stopped), one at a time.",
)
def tmdb_changes_sensor(context: dg.SensorEvaluationContext):
    active = context.instance.get_runs(
        filters=dg.RunsFilter(
            job_name=SYNC_JOB,
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED],
        ),
        limit=1,
    )
    if active:
        return dg.SkipReason(f"sync run {active[0].run_id[:8]} is still going; the next tick tries again")
    return dg.RunRequest()


def alert_sensors() -> list:
    """The alert sensor only exists when a webhook is configured: no sensor that only ever skips."""
    return [alert_on_run_failure] if os.environ.get("ALERT_WEBHOOK_URL") else []
