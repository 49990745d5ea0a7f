"""movie_pipeline_monthly: Airflow schedules the monthly refresh, Dagster materializes it.

Each task stands for one stage of the asset graph (ingest -> prepare -> features).
All three are proxied (proxied_state/movie_pipeline_monthly.yaml): at run time they
ask Dagster to materialize their assets for the release month of the run's data
interval. A scheduled run on the 1st covers the month that just ended; a manual
trigger covers the last complete month before its logical date.
"""

from pathlib import Path

import pendulum
from airflow.operators.python import PythonOperator
from dagster_airlift.in_airflow import load_proxied_state_from_yaml, proxying_to_dagster
from movie_bridge import MovieAssetsOperator

from airflow import DAG


def runs_in_dagster(**context) -> None:
    """What an unproxied task would do: nothing here, the assets live in Dagster."""
    raise RuntimeError(
        f"task {context['task'].task_id} is not proxied: set `proxied: True` for it in "
        "airflow/dags/proxied_state/movie_pipeline_monthly.yaml so Dagster materializes it"
    )


with DAG(
    dag_id="movie_pipeline_monthly",
    description="TMDB crawl -> clean -> features for one release month, materialized by Dagster",
    schedule="0 0 1 * *",
    start_date=pendulum.datetime(2023, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["movies", "dagster"],
    default_args={"retries": 0},
) as dag:
    ingest = PythonOperator(task_id="ingest", python_callable=runs_in_dagster, doc_md="movies_raw, movies_raw_backup")
    prepare = PythonOperator(task_id="prepare", python_callable=runs_in_dagster, doc_md="movies_clean, eda_stats")
    features = PythonOperator(task_id="features", python_callable=runs_in_dagster, doc_md="movie_features")
    ingest >> prepare >> features

# Last, once the DAG is bound to a module-level name: swaps proxied tasks for MovieAssetsOperator.
proxying_to_dagster(
    global_vars=globals(),
    proxied_state=load_proxied_state_from_yaml(Path(__file__).parent / "proxied_state"),
    build_from_task_fn=MovieAssetsOperator.build_from_task,
)
