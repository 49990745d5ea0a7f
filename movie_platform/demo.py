"""`movie-platform demo`: materialize the whole asset graph headlessly and print what landed where.

Runs go through the Dagster instance of `DAGSTER_HOME`, so they show up in the UI
afterwards exactly like runs launched from it. The console gets one line per stage and
the summary; Dagster's event stream (and library warnings) go to a log file under the
state dir, or to the console with `--verbose`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from pathlib import Path

import dagster as dg

from movie_assets.partitions import sample_range
from movie_assets.settings import Settings, redact_url
from movie_platform.doctor import configured

# The months the sample source covers (domain/sample_span.py), as the partitions under it.
DEMO_PARTITION_RANGE = sample_range()


def run_demo(settings: Settings, log=print, verbose: bool = False) -> bool:
    # MLflow draws a "Downloading artifacts" bar per model load; set before mlflow is imported.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from movie_assets.definitions import defs
    from movie_platform.doctor import run_checks

    event_log = open_event_log(verbose)
    log(f"full Dagster event log: {event_log}")

    checks = run_checks(settings)
    for check in checks:
        log(check.line())
    if not all(check.ok for check in checks):
        log("a service is not reachable: fix it (see above) and run the demo again")
        return False

    instance = dg.DagsterInstance.get()
    graph = defs.resolve_asset_graph()
    ok = True
    for partitioned, keys in run_phases(graph):
        stored = stored_movies(settings) if dg.AssetKey("movies_raw") in keys else None
        if partitioned:
            start, end = DEMO_PARTITION_RANGE
            log(f"materializing {len(keys)} partitioned assets for {start}...{end} in one run: {names(keys)}")
            tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
        else:
            log(f"materializing {len(keys)} unpartitioned assets: {names(keys)}")
            tags = {}
        ok = ok and _materialize(defs, instance, keys, log, tags=tags, event_log=event_log, verbose=verbose)
        if ok and stored is not None:
            log(f"  movies_raw: {crawl_difference(stored, stored_movies(settings))}")
    if not graph.materializable_asset_keys:
        log("no assets are defined yet: the stack is up and every service answered")
    sync = _sync(defs, instance, log, event_log, verbose) if ok else None
    print_summary(settings, log)
    if sync:
        log(f"  TMDB change sync: {sync}")
    if not ok or sync is None:
        log(f"a run failed: its events are in {event_log} and in the Dagster UI (`make dev`)")
    return ok and sync is not None


def open_event_log(verbose: bool) -> Path:
    """A new `<state dir>/logs/demo-<UTC time>.log`; warnings and MLflow's INFO lines go there unless verbose."""
    import mlflow  # noqa: F401  (it sets its logger's handlers on import; ours replace them below)

    from movie_platform.local_stack import default_state_dir

    path = default_state_dir() / "logs" / f"demo-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    if not verbose:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logging.captureWarnings(True)
        for name in ("py.warnings", "mlflow"):
            logger = logging.getLogger(name)
            logger.handlers = [handler]
            logger.propagate = False
    return path


def run_quietly(run, event_log: Path, verbose: bool, log):
    """`run()` with stderr (MLflow's registry prints, Dagster's console logger) in the log file unless verbose;
    a failed run's step errors are printed to the console all the same."""
    if verbose:
        return run()
    with event_log.open("a") as out, contextlib.redirect_stderr(out):
        result = run()
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            log(f"  {event.step_key} failed: {(error.message if error else event.message or '').strip()}")
    return result


def quiet_run_config(verbose: bool) -> dict:
    """Dagster's console logger prints every event at DEBUG; the demo's console shows only errors."""
    return {} if verbose else {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def append_events(instance, run_id: str, event_log: Path) -> None:
    """The run's whole event stream, as stored in the instance (what the UI's run page shows), one line each."""
    with event_log.open("a") as out:
        for entry in instance.all_logs(run_id):
            kind = entry.dagster_event.event_type_value if entry.dagster_event else "LOG"
            when = dt.datetime.fromtimestamp(entry.timestamp, dt.timezone.utc).isoformat(timespec="milliseconds")
            level = logging.getLevelName(entry.level)
            out.write(f"{when} {level} {run_id} {entry.step_key or '-'} {kind} {entry.user_message}\n")


def _sync(defs: dg.Definitions, instance, log, event_log: Path, verbose: bool) -> str | None:
    """One `sync_tmdb_changes` run, as the hourly sensor would start it; its counts as one line (None: failed)."""
    started = time.monotonic()
    log("syncing TMDB's change list since the crawl (sync_tmdb_changes)")
    job = defs.resolve_job_def("sync_tmdb_changes")
    result = run_quietly(
        lambda: job.execute_in_process(instance=instance, raise_on_error=False, run_config=quiet_run_config(verbose)),
        event_log,
        verbose,
        log,
    )
    append_events(instance, result.run_id, event_log)
    log(f"  run {result.run_id}: {'success' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s")
    if not result.success:
        return None
    output = next(e for e in result.all_events if e.is_successful_output)
    return sync_line({name: value.value for name, value in output.step_output_data.metadata.items()})


# What became of each id the change list named: every one lands in exactly one of these.
SYNC_OUTCOMES = {
    "changed": "changed",
    "moved_in": "moved_in",
    "new": "new",
    "removed": "removed",
    "rejected": "rejected",
    "unchanged": "already as stored",
    "fetched_earlier_today": "fetched earlier today",
    "outside_range": "outside the months",
    "out_of_scope": "adult or video",
    "unknown_deleted": "deleted, never stored",
}


def sync_line(metadata: dict) -> str:
    """The sync's counts, one per outcome, and any listed id none of them explains (there should be none)."""
    counts = {name: int(metadata.get(name, 0)) for name in SYNC_OUTCOMES}
    unexplained = int(metadata["changed_ids"]) - sum(counts.values())
    shown = [f"{n} {SYNC_OUTCOMES[name]}" for name, n in counts.items() if n or list(SYNC_OUTCOMES).index(name) < 5]
    if unexplained:
        shown.append(f"{unexplained} UNEXPLAINED")
    return (
        f"{metadata['changed_ids']} changed movies listed for {metadata['window']}: {', '.join(shown)}; "
        f"{metadata['months_touched']} months re-materialized (the first automation tick of `make dev` carries "
        "them on to Redis and predictions)"
    )


def stored_movies(settings: Settings) -> dict[int, str]:
    """A digest of each stored movie's typed columns (what a sync compares), by id; empty before the first crawl."""
    import psycopg
    from psycopg import sql

    from movie_assets.domain.change_sync import COMPARED_COLUMNS

    with psycopg.connect(configured(settings.db_url, "MOVIE_DB_URL"), connect_timeout=5) as conn:
        table = conn.execute(
            "select 1 from information_schema.tables where table_schema = %s and table_name = 'movies_raw'",
            (settings.db_schema,),
        ).fetchone()
        if table is None:
            return {}
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in COMPARED_COLUMNS if c != "movie_id")
        query = sql.SQL("select movie_id, md5(row({})::text) from {}.{}").format(
            columns, sql.Identifier(settings.db_schema), sql.Identifier("movies_raw")
        )
        return dict(conn.execute(query).fetchall())


def crawl_difference(before: dict[int, str], after: dict[int, str]) -> str:
    """What the crawl changed among the movies stored before it: a crawl that moves values says so."""
    changed = sum(digest != before[movie_id] for movie_id, digest in after.items() if movie_id in before)
    new, gone = len(after.keys() - before.keys()), len(before.keys() - after.keys())
    return (
        f"{len(after):,} movies stored; of the {len(before):,} stored before, {changed} changed and {gone} gone; "
        f"{new} new"
    )


def run_phases(graph) -> list[tuple[bool, list]]:
    """The asset graph cut into runs: each run holds only partitioned or only unpartitioned
    assets, and comes after the runs of everything it depends on."""
    keys = set(graph.materializable_asset_keys)
    done: set = set()
    phases = []
    while keys - done:
        for partitioned in (True, False):
            phase: set = set()
            grew = True
            while grew:
                grew = False
                for key in sorted(keys - done - phase):
                    node = graph.get(key)
                    parents_ready = all(p in done or p in phase or p not in keys for p in node.parent_keys)
                    if (node.partitions_def is not None) == partitioned and parents_ready:
                        phase.add(key)
                        grew = True
            if phase:
                phases.append((partitioned, sorted(phase)))
                done |= phase
    return phases


def names(keys) -> str:
    return ", ".join(key.to_user_string() for key in keys)


def _materialize(defs: dg.Definitions, instance, keys, log, tags, event_log: Path, verbose: bool) -> bool:
    started = time.monotonic()
    job = dg.define_asset_job("__demo__", selection=dg.AssetSelection.assets(*keys))
    resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("__demo__")
    result = run_quietly(
        lambda: resolved.execute_in_process(
            instance=instance, tags=tags, raise_on_error=False, run_config=quiet_run_config(verbose)
        ),
        event_log,
        verbose,
        log,
    )
    append_events(instance, result.run_id, event_log)
    log(f"  run {result.run_id}: {'success' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return result.success


def print_summary(settings: Settings, log=print) -> None:
    """Rows per table, objects in the object store, Redis keys, the latest MLflow run."""
    log("\n== summary ==")
    for line in _table_rows(settings):
        log(line)
    for line in _objects(settings):
        log(line)
    for line in _redis_keys(settings):
        log(line)
    for line in _mlflow_runs(settings):
        log(line)


def _table_rows(settings: Settings) -> list[str]:
    import psycopg
    from psycopg import sql

    url = configured(settings.db_url, "MOVIE_DB_URL")
    with psycopg.connect(url, connect_timeout=5) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "select table_name from information_schema.tables where table_schema = %s and table_type = 'BASE "
                "TABLE' order by 1",
                (settings.db_schema,),
            )
        ]
        counts = []
        for t in tables:
            row = conn.execute(
                sql.SQL("select count(*) from {}.{}").format(sql.Identifier(settings.db_schema), sql.Identifier(t))
            ).fetchone()
            assert row is not None, "count(*) always returns one row"
            counts.append((t, row[0]))
    lines = [f"postgres {redact_url(url)} schema {settings.db_schema}: {len(tables)} tables"]
    lines += [f"  {t:<24} {n:>10,} rows" for t, n in counts]
    return lines


def _objects(settings: Settings) -> list[str]:
    from movie_assets.resources.object_store import object_root_for

    root = object_root_for(settings)
    prefixes: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            top = path.relative_to(root).parts[0]
            prefixes[top] = prefixes.get(top, 0) + 1
    lines = [f"object store {redact_url(settings.storage_url)}: {sum(prefixes.values())} objects"]
    lines += [f"  {p + '/':<24} {n:>10,} objects" for p, n in sorted(prefixes.items())]
    return lines


def _redis_keys(settings: Settings) -> list[str]:
    import redis

    url = configured(settings.redis_url, "MOVIE_REDIS_URL")
    return [f"redis {redact_url(url)}: {redis.Redis.from_url(url).dbsize():,} keys"]


def _mlflow_runs(settings: Settings) -> list[str]:
    from mlflow.tracking import MlflowClient

    from movie_assets.resources.mlflow import MlflowTracking

    client = MlflowClient(settings.mlflow_tracking_uri)
    where = redact_url(settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("movie_rating")
    if experiment is None:
        return [f"mlflow {where}: no `movie_rating` experiment yet"]
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return [f"mlflow {where}: experiment `movie_rating` has no runs"]
    data = runs[0].data
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(data.metrics.items()))
    run_url = MlflowTracking.from_settings(settings).run_url(experiment.experiment_id, runs[0].info.run_id)
    lines = [f"mlflow latest run {run_url} (classic ML view): {metrics}"]
    if {"rmse", "baseline_rmse", "linear_rmse"} <= set(data.metrics):
        rmse, mean, ridge = (data.metrics[k] for k in ("rmse", "baseline_rmse", "linear_rmse"))
        lines.append(
            f"model: XGBoost holdout rmse {rmse:.3f}, mean baseline {mean:.3f} ({1 - rmse / mean:.0%} below), "
            f"ridge baseline {ridge:.3f} ({'ridge is better' if ridge < rmse else 'XGBoost is better'})"
        )
    lines.append(f"champion: {data.tags.get('champion_decision', 'no decision recorded')}")
    return lines
