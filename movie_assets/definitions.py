"""The code location: wires assets, checks, resources, schedules and jobs. Nothing else lives here."""

import dagster as dg

from movie_assets.airflow_bridge import map_airflow_tasks, scheduled_by_airflow, with_airflow
from movie_assets.assets import features, ingest, prepare, training
from movie_assets.automation.conditions import automation_sensor
from movie_assets.automation.executor import movie_executor
from movie_assets.automation.freshness import current_months_fresh, online_store_fresh
from movie_assets.automation.policies import with_policies
from movie_assets.automation.retrain import retrain_sensors
from movie_assets.automation.schedules import daily_history_pruning, daily_recent_months, refresh_recent_months_job
from movie_assets.automation.sensors import alert_sensors, tmdb_changes_sensor
from movie_assets.checks import ONLINE_STORE_CHECKS, STORAGE_CHECKS
from movie_assets.jobs.monthly_checks import monthly_checks
from movie_assets.jobs.restore import restore_movies_raw_from_backup
from movie_assets.jobs.retention import prune_history
from movie_assets.jobs.sweep import movie_rating_sweep
from movie_assets.jobs.sync_tmdb_changes import sync_tmdb_changes
from movie_assets.resources.wiring import build_resources

defs = with_airflow(
    dg.Definitions(
        assets=map_airflow_tasks(
            with_policies(dg.load_assets_from_modules([ingest, prepare, features, training]), scheduled_by_airflow())
        ),
        asset_checks=[online_store_fresh, current_months_fresh, *STORAGE_CHECKS, *ONLINE_STORE_CHECKS],
        jobs=[
            refresh_recent_months_job,
            restore_movies_raw_from_backup,
            movie_rating_sweep,
            sync_tmdb_changes,
            prune_history,
            monthly_checks,
        ],
        schedules=[daily_recent_months, daily_history_pruning],
        sensors=[automation_sensor(), tmdb_changes_sensor, *retrain_sensors(), *alert_sensors()],
        resources=build_resources(),
        executor=movie_executor,
    )
)
