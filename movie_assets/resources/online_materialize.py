"""Feast materialization into Redis, spread over the machine's cores.

Stock `FeatureStore.materialize` converts Arrow rows to protobuf and writes them in
one process, which leaves a core idle while Redis waits. This module does the same
steps as Feast's own compute engines (pull the latest rows per entity from the
offline store, convert with Feast's converter, `online_write_batch` through the
provider) in one worker process per slice, then records the interval in the
registry like `materialize` does. Redis holds exactly what stock Feast would write,
so the Feast SDK reads it as usual. Feast's underscore helpers are used only here.
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pyarrow as pa

VIEW = "movie_features"
PARALLEL_FROM_ROWS = 20_000  # below this, worker start-up costs more than it saves


def materialize_parallel(feast, start: dt.datetime, end: dt.datetime, workers: int | None = None,
                         parallel_from_rows: int = PARALLEL_FROM_ROWS) -> int:
    """Write the latest offline rows of [start, end) per movie to Redis; returns the rows written."""
    store = feast.store()
    view = store.get_feature_view(VIEW)
    source = view.batch_source
    table = store._get_provider().offline_store.pull_latest_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=[column.name for column in view.entity_columns],
        feature_name_columns=[feature.name for feature in view.features],
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        start_date=start,
        end_date=end,
    ).to_arrow()
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
    from feast.utils import _convert_arrow_to_proto

    from movie_assets.resources.feast import FeastStore

    store = FeastStore(**feast_config).store()
    view = store.get_feature_view(VIEW)
    key_types = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    rows = _convert_arrow_to_proto(table, view, key_types)
    store._get_provider().online_write_batch(config=store.config, table=view, data=rows, progress=None)
    return len(rows)
