"""The offline store's history of a month: superseded rows only, kept for a time window after being superseded."""

import datetime as dt

import pandas as pd

from movie_assets.assets.features import archive_superseded
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.object_store import ObjectStore

MONTH = "2024-03-01"
T0 = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.timezone.utc)
WINDOW = dt.timedelta(days=400)


def rows(*ids: int) -> pd.DataFrame:
    return pd.DataFrame({"movie_id": list(ids), "event_timestamp": [pd.Timestamp("2026-01-01T00:00:00Z")] * len(ids)})


def history_names(store: ObjectStore) -> list[str]:
    folder = store.path_for(FEATURES_OBJECT_PATH, MONTH).parent / "history"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_one_object_per_month_of_changes_and_none_for_an_unchanged_month(tmp_path):
    store = ObjectStore(storage_url=tmp_path.as_uri())
    for day in range(3):  # nothing superseded: nothing written, however often the month is materialized
        assert archive_superseded(store, MONTH, rows(), T0 + dt.timedelta(days=day), T0 - WINDOW) == 0
    assert history_names(store) == []
    assert archive_superseded(store, MONTH, rows(7), T0, T0 - WINDOW) == 1
    # Later runs of the same calendar month add their rows to that object (a retry adds nothing twice):
    # a point-in-time join opens a few objects a month, not one per run.
    for day in (3, 3, 9):
        assert archive_superseded(store, MONTH, rows(day), T0 + dt.timedelta(days=day), T0 - WINDOW) == 1
    assert history_names(store) == ["materialized=2026-12.parquet"]
    path = store.path_for(FEATURES_OBJECT_PATH, MONTH).parent / "history" / history_names(store)[0]
    stored = pd.read_parquet(path.open("rb"))["movie_id"].tolist()
    assert stored == [7, 3, 9], "only the superseded rows, each once, no full copy"


def test_an_object_goes_once_its_rows_successors_have_held_longer_than_the_window(tmp_path):
    store = ObjectStore(storage_url=tmp_path.as_uri())
    older = store.path_for(FEATURES_OBJECT_PATH, MONTH).parent / "history" / "materialized=20261130T080000Z.parquet"
    older.parent.mkdir(parents=True)
    rows(6).to_parquet(older.path)  # the earlier layout: one object per run, named by its time
    archive_superseded(store, MONTH, rows(7), T0, T0 - WINDOW)  # December's object
    archive_superseded(store, MONTH, rows(8), T0 + dt.timedelta(days=40), T0 - WINDOW)  # January's
    assert len(history_names(store)) == 3
    december_ends = dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)
    inside = december_ends + WINDOW - dt.timedelta(seconds=1)  # a row superseded on Dec 31 still counts
    assert archive_superseded(store, MONTH, rows(), inside, inside - WINDOW) == 2, "the run-named object has gone"
    past = december_ends + WINDOW
    assert archive_superseded(store, MONTH, rows(), past, past - WINDOW) == 1
    assert history_names(store) == ["materialized=2027-01.parquet"]
