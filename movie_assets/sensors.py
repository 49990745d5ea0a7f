"""Sensors: a failed run posts a Slack-compatible alert to ALERT_WEBHOOK_URL."""
import os

import dagster as dg
import requests

from movie_assets.settings import redact_text


def alert_text(context: dg.RunFailureSensorContext) -> str:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition") or "..".join(
        filter(None, [run.tags.get("dagster/asset_partition_range_start"), run.tags.get("dagster/asset_partition_range_end")])
    )
    message = context.failure_event.message or "no message"
    where = f" for partition {partition}" if partition else ""
    return redact_text(f":red_circle: Dagster run `{run.run_id[:8]}` of `{run.job_name}`{where} failed: {message}")


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


def alert_sensors() -> list:
    """The alert sensor only exists when a webhook is configured: no sensor that only ever skips."""
    return [alert_on_run_failure] if os.environ.get("ALERT_WEBHOOK_URL") else []
