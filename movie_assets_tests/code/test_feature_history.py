"""The offline store keeps a month's earlier materializations, as many as configured, and no more."""

import pandas as pd

from movie_assets.assets.features import archive_current
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.object_store import ObjectStore

MONTH = "2024-03-01"


def materialize(store: ObjectStore, second: int) -> None:
    frame = pd.DataFrame({"movie_id": [1], "event_timestamp": [pd.Timestamp(f"2026-12-02T08:00:{second:02d}Z")]})
    store.write(FEATURES_OBJECT_PATH, MONTH, frame.to_parquet(index=False))


def history_names(store: ObjectStore) -> list[str]:
    folder = store.path_for(FEATURES_OBJECT_PATH, MONTH).parent / "history"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_each_replaced_version_moves_to_history_and_only_the_newest_are_kept(tmp_path):
    store = ObjectStore(storage_url=tmp_path.as_uri())
    assert archive_current(store, MONTH, keep=2) == 0  # nothing there yet
    for second in range(4):
        materialize(store, second)
        archive_current(store, MONTH, keep=2)
    assert history_names(store) == ["materialized=20261202T080002Z.parquet", "materialized=20261202T080003Z.parquet"]
    assert archive_current(store, MONTH, keep=0) == 0 and history_names(store) == []
