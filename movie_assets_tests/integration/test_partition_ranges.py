"""A reversed partition range (`B...A`) is refused at once, with the order to use, and never retried.

Before, Dagster accepted each end on its own, the run started, and the first step died in a
`CheckError` that the retry policy repeated twice.
"""

import os
import sys

import dagster as dg
import pytest

from movie_assets.assets.ingest import movies_raw, movies_raw_backup
from movie_assets.assets.prepare import movies_clean
from movie_assets.resources.postgres import existing_tables
from movie_assets.resources.tmdb_sample import TmdbSampleSource
from movie_assets_tests.conftest import platform_resources, with_storage_checks

REVERSED = {"dagster/asset_partition_range_start": "2024-03-01", "dagster/asset_partition_range_end": "2024-01-01"}
REFUSAL = "partition range 2024-03-01...2024-01-01 is reversed"
RIGHT_ORDER = "launch it again with the earlier month first: 2024-01-01...2024-03-01"


@pytest.mark.parametrize(
    ("selection", "tables"),
    [("movies_raw*", ["movies_raw", "movies_rejected"]), ("movies_clean", ["movies_clean", "movies_raw"])],
    ids=["asset body", "io manager input"],
)
def test_a_reversed_range_fails_its_first_step_once_with_the_right_order(database, object_store, selection, tables):
    result = dg.materialize(
        with_storage_checks(movies_raw, movies_raw_backup, movies_clean),
        selection=selection,
        resources=platform_resources(database, object_store, TmdbSampleSource()),
        tags=REVERSED,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events and events.count("STEP_FAILURE") == 1, events
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert REFUSAL in message and RIGHT_ORDER in message, message
    with database.connect() as conn:
        assert existing_tables(conn, database.db_schema, tables) == [], "nothing was written"


def test_the_dagster_cli_refuses_a_reversed_range_without_retries(stack_env, tmp_path, database):
    import subprocess

    env = {
        **os.environ,
        **stack_env,
        "MOVIE_DB_SCHEMA": database.db_schema,
        "MOVIE_STORAGE_URL": (tmp_path / "objects").as_uri(),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "TMDB_SOURCE": "sample",
    }
    (tmp_path / "home").mkdir()
    command = [
        os.path.join(os.path.dirname(sys.executable), "dagster"),
        *("asset", "materialize", "-m", "movie_assets", "--select", "movies_raw,movies_raw_backup"),
        *("--partition-range", "2024-03-01...2024-01-01"),
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode != 0
    assert REFUSAL in run.stderr and RIGHT_ORDER in run.stderr, run.stderr[-3000:]
    assert "STEP_UP_FOR_RETRY" not in run.stderr and "CheckError" not in run.stderr, run.stderr[-3000:]
