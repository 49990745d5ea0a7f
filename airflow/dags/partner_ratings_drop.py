"""partner_ratings_drop: a legacy Airflow-only job that Dagster observes but does not run.

It stands for a partner's daily ratings file landing in a drop folder. The airlift
sensor in Dagster turns each successful run into a materialization of the external
asset `partner_ratings`, so the file shows up in the lineage graph next to TMDB data.
"""

import csv
import os
from pathlib import Path

import pendulum
from airflow.operators.python import PythonOperator

from airflow import DAG


def receive_ratings_file(ds: str, **_) -> str:
    """Write the day's ratings file into PARTNER_DROP_DIR (default: $AIRFLOW_HOME/partner_drops)."""
    folder = Path(os.environ.get("PARTNER_DROP_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "partner_drops")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ratings_{ds}.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["movie_id", "partner_rating", "ratings"])
        writer.writerows([(24001001, 7.4, 812), (24001002, 6.1, 95), (24002003, 8.0, 1204)])
    tmp.replace(path)  # atomic: readers never see half a file
    return str(path)


with DAG(
    dag_id="partner_ratings_drop",
    description="Legacy: a partner's daily ratings file lands in the drop folder (observed by Dagster)",
    schedule="@daily",
    start_date=pendulum.datetime(2023, 1, 1, tz="UTC"),
    catchup=False,
    tags=["movies", "legacy"],
) as dag:
    PythonOperator(task_id="receive_ratings_file", python_callable=receive_ratings_file)
