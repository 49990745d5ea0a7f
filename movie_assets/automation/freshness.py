"""How fresh the assets users rely on must be: freshness policies shown in the UI, and a check that can fail.

The windows fit the automation: the hourly TMDB change sync and the daily refresh keep
`movies_raw` within a day, `online_features` follows each new feature month, and the
model retrains weekly.
"""

import datetime as dt

import dagster as dg

from movie_assets.domain import clock
from movie_assets.partitions import release_month_partitions
from movie_assets.resources.feast import FeastStore
from movie_assets.settings import Settings

CURRENT_MONTHS = 2  # this month and the one before: where new releases and most votes land

FRESHNESS_WINDOWS: dict[str, tuple[dt.timedelta, dt.timedelta]] = {
    # key: (fail after, warn after) since the last materialization
    "movies_raw": (dt.timedelta(hours=26), dt.timedelta(hours=13)),
    "online_features": (dt.timedelta(hours=26), dt.timedelta(hours=13)),
    "movie_rating_model": (dt.timedelta(days=8), dt.timedelta(days=7, hours=6)),
}


def policies() -> dict[str, dg.FreshnessPolicy]:
    return {
        key: dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)
        for key, (fail, warn) in FRESHNESS_WINDOWS.items()
    }


def online_store_age(last_materialized: dt.datetime | None, now: dt.datetime) -> dg.AssetCheckResult:
    """Pass while the online store's newest materialization is younger than its fail window."""
    fail, warn = FRESHNESS_WINDOWS["online_features"]
    if last_materialized is None:
        return dg.AssetCheckResult(
            passed=False, metadata={"last_materialized": "never", "fail_window_hours": fail.total_seconds() / 3600}
        )
    age = now - last_materialized
    return dg.AssetCheckResult(
        passed=age <= fail,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "last_materialized": last_materialized.isoformat(),
            "age_hours": round(age.total_seconds() / 3600, 2),
            "fail_window_hours": fail.total_seconds() / 3600,
            "warn_window_hours": warn.total_seconds() / 3600,
            "state": "FAIL" if age > fail else ("WARN" if age > warn else "PASS"),
        },
    )


HOURLY: dg.AutomationCondition = dg.AutomationCondition.cron_tick_passed("0 * * * *")


@dg.asset_check(
    asset="online_features",
    description="the online store's newest materialization (Feast registry) is younger than the freshness policy",
    automation_condition=HOURLY.since_last_handled(),
)
def online_store_fresh(feast: FeastStore) -> dg.AssetCheckResult:
    """Hourly (and from the Checks tab): what Redis serves is not older than online_features' policy."""
    view = feast.store().get_feature_view("movie_features")
    return online_store_age(view.most_recent_end_time, clock.now())


def current_months_age(last: dict[str, dt.datetime | None], now: dt.datetime) -> dg.AssetCheckResult:
    """Pass while every current month's newest movies_raw materialization is younger than the fail window."""
    fail, warn = FRESHNESS_WINDOWS["movies_raw"]
    ages = {month: (now - when) if when else None for month, when in last.items()}
    stale = sorted(month for month, age in ages.items() if age is None or age > fail)
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "stale_months": ", ".join(stale) or "none",
            **{
                f"age_hours {month}": round(age.total_seconds() / 3600, 2) if age is not None else "never"
                for month, age in sorted(ages.items())
            },
            "fail_window_hours": fail.total_seconds() / 3600,
            "warn_window_hours": warn.total_seconds() / 3600,
        },
    )


def last_materialized(instance: dg.DagsterInstance, key: str, partition: str) -> dt.datetime | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    return dt.datetime.fromtimestamp(records[0].timestamp, dt.timezone.utc) if records else None


@dg.asset_check(
    asset="movies_raw",
    description=f"the {CURRENT_MONTHS} newest release months were crawled or synced within movies_raw's freshness "
    "policy (the asset's own policy counts any month, and a sync that touches 1995 would satisfy it)",
    # Hourly with the API; with the sample (no current months) it runs from the Checks tab only.
    automation_condition=HOURLY.since_last_handled() if Settings.from_env().tmdb_source == "api" else None,
)
def current_months_fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    months = release_month_partitions.get_partition_keys()[-CURRENT_MONTHS:]
    last = {month: last_materialized(context.instance, "movies_raw", month) for month in months}
    return current_months_age(last, clock.now())
