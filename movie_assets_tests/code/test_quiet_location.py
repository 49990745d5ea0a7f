"""The code location prints no warnings where users read them: the `make dev` console and every run's log.

Python hides DeprecationWarnings outside `__main__`, unless a library turns them on for the whole
process. Feast's modules did (`simplefilter("once", DeprecationWarning)` on import), so every process
that loaded movie_assets printed Dagster's own deprecations. pytest sets its own filters, so this
runs in a fresh interpreter, as the code server and a run worker do.
"""

import os
import subprocess
import sys

from movie_platform.local_stack import REPO_ROOT

# What the code server does when it loads the location (a snapshot of it, schedules included)
# and what a run worker does first (initialize the resources, nested ones included).
LOAD_AND_INIT = """
import warnings
import dagster as dg
from dagster._core.remote_representation.external_data import RepositorySnap

from movie_assets.definitions import defs
from movie_assets.resources.postgres import PostgresDatabase, PostgresIOManager

RepositorySnap.from_def(defs.get_repository_def())
database = PostgresDatabase(url="postgresql://nobody@127.0.0.1:1/none")
with dg.build_resources({"database": database, "postgres_io_manager": PostgresIOManager(database=database)}):
    pass
print("DeprecationWarning filters:", [f[0] for f in warnings.filters if f[2] is DeprecationWarning])
"""


def test_loading_the_location_and_initializing_resources_prints_no_warning():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS" and not k.startswith("AIRFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_INIT], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
    # Python's own defaults: shown in __main__ only, ignored elsewhere; nothing of Feast's "once".
    assert done.stdout.strip().endswith("['default', 'ignore']"), done.stdout
