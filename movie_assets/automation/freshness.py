"""How fresh the assets users rely on must be: freshness policies shown in the UI, and a check that can fail.

The windows fit the automation: the hourly TMDB change sync and the daily refresh keep
`movies_raw` within a day, `online_features` follows each new feature month, and the
model retrains weekly.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from movie_assets.resources.feast import FeastStore

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
    return online_store_age(view.most_recent_end_time, dt.datetime.now(dt.timezone.utc))
