"""Feast materialization into Redis, spread over the machine's cores.

Stock `FeatureStore.materialize` builds a protobuf object per value and writes in one
process. Here the steps of Feast's own compute engines are kept (pull the latest
rows per entity from the offline store, newer-wins write, record the interval in
the registry), but the encoding is vectorized (`online_writer`) and slices are
written by one worker process per core. Redis holds exactly the bytes stock Feast
writes (a test compares them, and every write compares one row with Feast's own
conversion), so the Feast SDK reads them as usual. A view with a feature type the
writer cannot encode exactly goes to stock `materialize` instead, with a warning.
Feast's underscore helpers live in `feast_private` only.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

VIEW = "movie_features"
PARALLEL_FROM_ROWS = 20_000  # below this, worker start-up costs more than it saves
_PULLED: pa.Table | None = None  # the rows being written, for the forked workers


@dataclass(frozen=True)
class Materialized:
    """What one materialization did: rows pulled, movies written, and by which path."""

    rows: int  # latest rows per movie pulled from the offline store for the window
    written: int  # movies written (newer-wins skips and rows past the view's TTL are not)
    processes: int  # writer processes (1: in the calling process)
    path: str  # "parallel", "in-process" or "feast-materialize" (fallback)


def materialize_parallel(
    feast,
    start: dt.datetime,
    end: dt.datetime,
    workers: int | None = None,
    parallel_from_rows: int = PARALLEL_FROM_ROWS,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> Materialized:
    """Write the latest offline rows of [start, end) per movie to Redis."""
    from movie_assets.resources.online_writer import FeastRedisLayout

    log = log or logging.getLogger(__name__)
    store = feast.store()
    view = store.get_feature_view(VIEW)
    layout = FeastRedisLayout(store, view)  # refuses a Feast version the layout was not checked against
    table = pull_latest(feast, view, start, end)
    if layout.unsupported:
        log.warning(
            f"feature view {view.name}: the fast Redis writer cannot encode {', '.join(layout.unsupported)} "
            "exactly, so Feast's own materialize writes this view (slower, one process)"
        )
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        return Materialized(table.num_rows, table.num_rows, 1, "feast-materialize")
    workers = workers or os.cpu_count() or 1
    if table.num_rows == 0:
        result = Materialized(0, 0, 1, "in-process")
    elif table.num_rows < parallel_from_rows or workers == 1:
        result = Materialized(table.num_rows, write_slice(feast.model_dump(), table), 1, "in-process")
    else:
        global _PULLED
        size = -(-table.num_rows // workers)
        offsets = list(range(0, table.num_rows, size))
        # fork: the workers inherit the imported Feast modules and the pulled table (copy-on-write; Arrow
        # buffers are never written) instead of importing again and unpickling a copy of their slice.
        _PULLED = table
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
                done = list(
                    pool.map(write_slice_in_worker, [feast.model_dump()] * len(offsets), offsets, [size] * len(offsets))
                )
        finally:
            _PULLED = None
        pids = {pid for _, pid in done} - {os.getpid()}
        result = Materialized(table.num_rows, sum(written for written, _ in done), len(pids), "parallel")
    store.registry.apply_materialization(view, store.project, start, end)
    return result


def write_slice_in_worker(feast_config: dict, offset: int, length: int) -> tuple[int, int]:
    """(rows written, the worker's pid): the pids show the slices really ran in forked processes."""
    assert _PULLED is not None, "write_slice_in_worker runs in a process forked by materialize_parallel"
    return write_slice(feast_config, _PULLED.slice(offset, length)), os.getpid()


def pull_latest(feast, view, start: dt.datetime, end: dt.datetime) -> pa.Table:
    """The newest offline row per movie with start <= event time <= end: what Feast's file offline store pulls.

    Same rule as its `pull_latest_from_table_or_query` (both ends inclusive; order by event time,
    then created; keep the last row per entity), read with Arrow instead of dask: dask's sorts and
    persists held several copies of the table (3.2 GiB at a million movies) and took most of the
    stage's time. Only the key columns are sorted; the wide table is taken once, latest rows only.
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from movie_assets.object_layout import FEATURES_PREFIX
    from movie_assets.resources.object_store import object_root

    source = view.batch_source
    keys = [column.name for column in view.entity_columns]
    stamps = [source.timestamp_field, *([source.created_timestamp_column] if source.created_timestamp_column else [])]
    columns = [*keys, *(feature.name for feature in view.features), *stamps]
    window = (pc.field(source.timestamp_field) >= start) & (pc.field(source.timestamp_field) <= end)
    folder = object_root(feast.storage_url, feast.s3_endpoint_url) / FEATURES_PREFIX
    parts = []
    for part in sorted(folder.glob("release_month=*/*.parquet")):
        with part.open("rb") as handle:
            parts.append(pq.read_table(handle, columns=columns, filters=window))
    if not parts:
        return pa.table({name: pa.array([], pa.null()) for name in columns})
    table = pa.concat_tables(parts)
    del parts
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(
        table.select([*keys, *stamps]), sort_keys=[(name, "ascending") for name in [*keys, *stamps]]
    )
    entities = pc.take(table.select(keys), order)
    last = np.zeros(len(order), dtype=bool)
    last[-1] = True
    for name in keys:  # a row is its entity's latest when the next sorted row is another entity
        values = entities[name].to_numpy()
        last[:-1] |= values[:-1] != values[1:]
    return table.take(pa.array(order.to_numpy()[last]))


def write_slice(feast_config: dict, table: pa.Table) -> int:
    from movie_assets.resources.feast import FeastStore
    from movie_assets.resources.online_writer import write_latest

    store = FeastStore(**feast_config).store()
    view = store.get_feature_view(VIEW)
    return write_latest(store, view, table, store.config.online_store.key_ttl_seconds)
