"""Feast materialization into Redis, spread over the machine's cores.

Stock `FeatureStore.materialize` builds a protobuf object per value and writes in one
process. Here the steps of Feast's own compute engines are kept (pull the latest
rows per entity from the offline store, newer-wins write, record the interval in
the registry), but the encoding is vectorized (`online_writer`) and slices are
written by one worker process per core. Redis holds exactly the bytes stock Feast
writes (a test compares them), so the Feast SDK reads them as usual. Feast's
underscore helpers are used only in these two modules.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pyarrow as pa

VIEW = "movie_features"
PARALLEL_FROM_ROWS = 20_000  # below this, worker start-up costs more than it saves


def materialize_parallel(
    feast,
    start: dt.datetime,
    end: dt.datetime,
    workers: int | None = None,
    parallel_from_rows: int = PARALLEL_FROM_ROWS,
) -> int:
    """Write the latest offline rows of [start, end) per movie to Redis; returns the rows written."""
    store = feast.store()
    view = store.get_feature_view(VIEW)
    source = view.batch_source
    table = (
        store._get_provider()
        .offline_store.pull_latest_from_table_or_query(
            config=store.config,
            data_source=source,
            join_key_columns=[column.name for column in view.entity_columns],
            feature_name_columns=[feature.name for feature in view.features],
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_column,
            start_date=start,
            end_date=end,
        )
        .to_arrow()
    )
    workers = workers or os.cpu_count() or 1
    if table.num_rows == 0:
        written = 0
    elif table.num_rows < parallel_from_rows or workers == 1:
        written = write_slice(feast.model_dump(), table)
    else:
        size = -(-table.num_rows // workers)
        slices = [table.slice(offset, size) for offset in range(0, table.num_rows, size)]
        # fork: the workers inherit the imported Feast modules instead of importing them again.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            written = sum(pool.map(write_slice, [feast.model_dump()] * len(slices), slices))
    store.registry.apply_materialization(view, store.project, start, end)
    return written


def write_slice(feast_config: dict, table: pa.Table) -> int:
    from movie_assets.resources.feast import FeastStore
    from movie_assets.resources.online_writer import write_latest

    store = FeastStore(**feast_config).store()
    view = store.get_feature_view(VIEW)
    return write_latest(store, view, table, store.config.online_store.key_ttl_seconds)
