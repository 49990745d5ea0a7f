"""Schedules: the daily refresh of recent release months (off until someone turns it on)."""

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
