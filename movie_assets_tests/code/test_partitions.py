"""The release-month partitions fit the source: the sample's 24 months, or MOVIE_PARTITION_START onwards with the API.

The definition is built when `movie_assets.partitions` is imported, from that process's
environment; each case imports it in a fresh interpreter with exactly that environment.
"""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from movie_assets.partitions import release_months
from movie_assets.settings import Settings

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone.utc)
RUNNING_MONTH = dt.date.today().replace(day=1).isoformat()
PROBE = (
    "import json; from movie_assets.partitions import release_month_partitions as p; "
    "keys = p.get_partition_keys(); print(json.dumps([keys[0], keys[-1], len(keys)]))"
)


def imported_partitions(**env: str) -> tuple[str, str, int]:
    """(first key, last key, count) of the partitions a process with `env` (and no TMDB_* of ours) builds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TMDB_", "MOVIE_PARTITION_START"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    first, last, count = json.loads(out.splitlines()[-1])
    return first, last, count


def test_the_sample_source_imports_the_sample_months_only():
    """No TMDB credentials: the sample, and the UI counts 24 of 24 months, not 24 of 444."""
    assert imported_partitions() == ("2023-01-01", "2024-12-01", 24)


def test_the_api_source_imports_months_from_1990_to_the_running_month():
    first, last, count = imported_partitions(TMDB_API_KEY="k")
    assert (first, last) == ("1990-01-01", RUNNING_MONTH) and count >= 444


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, ("2023-01-01", "2024-12-01", 24)),
        ({"TMDB_SOURCE": "sample", "TMDB_API_KEY": "k"}, ("2023-01-01", "2024-12-01", 24)),
        ({"MOVIE_PARTITION_START": "2024-01-01"}, ("2024-01-01", "2024-12-01", 12)),  # the explicit start wins
        ({"TMDB_READ_ACCESS_TOKEN": "t"}, ("1990-01-01", "2026-12-01", 444)),
        ({"TMDB_SOURCE": "api"}, ("1990-01-01", "2026-12-01", 444)),
        ({"TMDB_API_KEY": "k", "MOVIE_PARTITION_START": "2020-01-01"}, ("2020-01-01", "2026-12-01", 84)),
    ],
)
def test_release_months_per_source(env, expected):
    keys = release_months(Settings.from_env(env)).get_partition_keys(current_time=NOW)
    assert (keys[0], keys[-1], len(keys)) == expected


def test_a_start_after_the_sample_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="MOVIE_PARTITION_START=2025-03-01 is after the TMDB sample's last month"):
        release_months(Settings.from_env({"MOVIE_PARTITION_START": "2025-03-01"}))
