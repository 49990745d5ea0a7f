"""Schedules: the daily refresh of recent release months (off until someone turns it on) and the daily pruning."""

import datetime as dt

import dagster as dg

refresh_recent_months_job = dg.define_asset_job(
    "refresh_recent_months",
    selection=dg.AssetSelection.assets("movies_raw", "movies_raw_backup"),
    description="Re-crawl a release month and refresh its backup.",
)


def recent_months(day: dt.date) -> list[str]:
    """This month and the previous one: TMDB keeps adding and fixing movies for a while after release."""
    this_month = day.replace(day=1)
    previous = (this_month - dt.timedelta(days=1)).replace(day=1)
    return [previous.isoformat(), this_month.isoformat()]


@dg.schedule(job=refresh_recent_months_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_recent_months(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.date()
    for key in recent_months(day):
        yield dg.RunRequest(run_key=f"{day}:{key}", partition_key=key)


@dg.schedule(job_name="prune_history", cron_schedule="30 5 * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
def daily_history_pruning(context: dg.ScheduleEvaluationContext):
    """Daily at 05:30 UTC: every growing store back to its retention window (jobs/retention.py)."""
    return dg.RunRequest(run_key=f"prune-{context.scheduled_execution_time:%Y-%m-%d}")
