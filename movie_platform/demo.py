"""`movie-platform demo`: materialize the whole asset graph headlessly and print what landed where.

Runs go through the Dagster instance of `DAGSTER_HOME`, so they show up in the UI
afterwards exactly like runs launched from it.
"""

from __future__ import annotations

import time

import dagster as dg

from movie_assets.partitions import sample_range
from movie_assets.settings import Settings, redact_url
from movie_platform.doctor import configured

# The months the sample source covers (domain/sample_span.py), as the partitions under it.
DEMO_PARTITION_RANGE = sample_range()


def run_demo(settings: Settings, log=print) -> bool:
    from movie_assets.definitions import defs
    from movie_platform.doctor import run_checks

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
        if partitioned:
            start, end = DEMO_PARTITION_RANGE
            log(f"materializing {len(keys)} partitioned assets for {start}...{end} in one run: {names(keys)}")
            tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
        else:
            log(f"materializing {len(keys)} unpartitioned assets: {names(keys)}")
            tags = {}
        ok = ok and _materialize(defs, instance, keys, log, tags=tags)
    if not graph.materializable_asset_keys:
        log("no assets are defined yet: the stack is up and every service answered")
    sync = _sync(defs, instance, log) if ok else None
    print_summary(settings, log)
    if sync:
        log(f"  TMDB change sync: {sync}")
    return ok and sync is not None


def _sync(defs: dg.Definitions, instance, log) -> str | None:
    """One `sync_tmdb_changes` run, as the hourly sensor would start it; its counts as one line (None: failed)."""
    started = time.monotonic()
    log("syncing TMDB's change list since the crawl (sync_tmdb_changes)")
    result = defs.resolve_job_def("sync_tmdb_changes").execute_in_process(instance=instance, raise_on_error=False)
    log(f"  run {result.run_id}: {'success' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s")
    if not result.success:
        return None
    output = next(e for e in result.all_events if e.is_successful_output)
    metadata = {name: value.value for name, value in output.step_output_data.metadata.items()}
    counts = ", ".join(f"{metadata[name]} {name}" for name in ("changed", "moved_in", "new", "removed", "rejected"))
    return (
        f"{metadata['changed_ids']} changed movies listed for {metadata['window']}: {counts}; "
        f"{metadata['months_touched']} months re-materialized (automation carries them on under `make dev`)"
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


def _materialize(defs: dg.Definitions, instance, keys, log, tags) -> bool:
    started = time.monotonic()
    job = dg.define_asset_job("__demo__", selection=dg.AssetSelection.assets(*keys))
    resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("__demo__")
    result = resolved.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
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

    client = MlflowClient(settings.mlflow_tracking_uri)
    where = redact_url(settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("movie_rating")
    if experiment is None:
        return [f"mlflow {where}: no `movie_rating` experiment yet"]
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return [f"mlflow {where}: experiment `movie_rating` has no runs"]
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(runs[0].data.metrics.items()))
    return [f"mlflow {where}: latest run {runs[0].info.run_id}: {metrics}"]
