"""The online store on real Redis: keys that never expire, coverage both ways, a writer that checks itself.

Each test writes its own offline rows (a Feast project of its own, Parquet in a temp folder),
so it controls event times and sizes: rows 100 days and 2 years old for expiry, a stray key for
the coverage check, a view with an INT32 feature for the fallback, and enough rows for the
multi-process writer to fork inside a Dagster step.
"""

import datetime as dt
import logging

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis

from movie_assets.assets.features import feast_definitions, online_features
from movie_assets.domain.feature_engineering import FEATURE_NAMES, FLOAT_FEATURES
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.online_materialize import materialize_parallel
from movie_assets_tests.conftest import own_feast_project

NOW = pd.Timestamp.now(tz="UTC").floor("s")
COVERAGE_CHECK = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("online_features"), "online_keys_match_offline"))
WINDOW = (dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))


def feature_rows(ids, event_time: pd.Timestamp | list) -> pd.DataFrame:
    ids = np.asarray(ids, dtype="int64")
    rows = pd.DataFrame({"movie_id": ids, "event_timestamp": event_time, "created": event_time})
    for i, name in enumerate(FEATURE_NAMES):
        rows[name] = ids * (i + 1) / 7.0 if name in FLOAT_FEATURES else (ids + i) % 3
    return rows


def write_offline(object_store, month: str, rows: pd.DataFrame) -> None:
    path = object_store.path_for(FEATURES_OBJECT_PATH, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path.path, index=False)


def applied(stack_env, object_store, objects=None):
    feast = own_feast_project(stack_env, object_store.storage_url)
    feast.store().apply(list((objects or feast.definitions()).values()))
    return feast


def layout_of(feast):
    from movie_assets.resources.online_writer import FeastRedisLayout

    store = feast.store()
    return FeastRedisLayout(store, store.get_feature_view("movie_features"))


def test_an_old_row_is_written_and_its_key_never_expires(stack_env, object_store):
    """Rows 100 days and 2 years old (were: one key expiring in days, one not written): both online, no expiry."""
    old, older = NOW - pd.Timedelta(days=100), NOW - pd.Timedelta(days=730)
    write_offline(object_store, "2024-01-01", feature_rows([11, 12], [old, older]))
    feast = applied(stack_env, object_store)
    done = materialize_parallel(feast, *WINDOW, workers=1)
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    keys = layout_of(feast).keys(np.array([11, 12]))
    assert [client.pttl(key) for key in keys] == [-1, -1], "a key without expiry (-2 would be: no key)"
    assert done.rows == 2 and done.written == 2


def test_a_stray_online_key_fails_the_coverage_check_naming_the_movie(stack_env, object_store, database):
    from movie_assets.resources.object_store import ObjectStore

    write_offline(object_store, "2024-01-01", feature_rows(range(1, 31), NOW - pd.Timedelta(days=1)))
    feast = applied(stack_env, object_store)
    resources = {
        "feast": feast,
        "object_store": ObjectStore(storage_url=object_store.storage_url),
        "database": database,
    }
    first = dg.materialize([online_features], resources=resources)
    assert {c.check_name: c.passed for c in first.get_asset_check_evaluations()}["online_keys_present"]

    # A movie the offline store no longer has still has its key (as eleven had in review).
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    source, stray = layout_of(feast).keys(np.array([1, 4242]))
    client.hset(stray, mapping=client.hgetall(source))
    again = dg.materialize([online_features], resources=resources)
    (present,) = [c for c in again.get_asset_check_evaluations() if c.check_name == "online_keys_present"]
    assert not present.passed, "a key of a movie that is not offline passed the coverage check"
    assert present.metadata["stale_online_keys"].value == 1
    assert present.metadata["stale_movie_ids"].value == "[4242]"

    # The same check from online_features' Checks tab (no materialization).
    from movie_assets.checks import ONLINE_STORE_CHECKS

    checks = dg.materialize(
        [online_features, *ONLINE_STORE_CHECKS],
        selection=COVERAGE_CHECK,
        resources=resources,
    )
    (evaluation,) = checks.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["stale_movie_ids"].value == "[4242]"
    client.delete(stray)
    after = dg.materialize(
        [online_features, *ONLINE_STORE_CHECKS],
        selection=COVERAGE_CHECK,
        resources=resources,
    )
    assert after.get_asset_check_evaluations()[0].passed


def test_an_unsupported_feature_type_goes_to_feasts_own_materialize(stack_env, object_store, caplog):
    """An INT32 feature was written as int64 before (bytes Feast would not write); now stock Feast writes the view."""
    from feast import FeatureView, Field
    from feast.types import Int32

    rows = feature_rows(range(1, 41), NOW - pd.Timedelta(days=1))
    write_offline(object_store, "2024-01-01", rows)

    def int32_view(feast):
        objects = feast.definitions()
        view = objects["movie_features"]
        schema = [Field(name=f.name, dtype=Int32 if f.name == "release_year" else f.dtype) for f in view.features]
        objects["movie_features"] = FeatureView(
            name=view.name,
            entities=[objects["movie"]],
            ttl=view.ttl,
            schema=schema,
            online=True,
            source=view.batch_source,
        )
        return objects

    stock = own_feast_project(stack_env, object_store.storage_url)
    stock.store().apply(list(int32_view(stock).values()))
    ours = own_feast_project(stack_env, object_store.storage_url)
    ours.store().apply(list(int32_view(ours).values()))
    stock.store().materialize(start_date=WINDOW[0], end_date=WINDOW[1], feature_views=["movie_features"])
    with caplog.at_level(logging.WARNING):
        done = materialize_parallel(ours, *WINDOW, workers=2, parallel_from_rows=1)
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    ids = rows["movie_id"].to_numpy()
    for stock_key, our_key in zip(layout_of(stock).keys(ids), layout_of(ours).keys(ids), strict=True):
        assert client.hgetall(stock_key) == client.hgetall(our_key)
    assert done.path == "feast-materialize"
    assert "release_year (INT32)" in caplog.text and "Feast's own materialize" in caplog.text

    from movie_assets.resources.online_writer import OnlineReader, UnsupportedFeatureTypes

    store = ours.store()
    with pytest.raises(UnsupportedFeatureTypes, match=r"release_year \(INT32\)"):
        OnlineReader(store, store.get_feature_view("movie_features"))


def test_a_writer_or_reader_that_differs_from_feasts_encoding_fails_naming_feast_and_the_field(
    stack_env, object_store, monkeypatch
):
    from movie_assets.resources import online_writer
    from movie_assets.resources.feast_private import FeastLayoutError

    write_offline(object_store, "2024-01-01", feature_rows([7], NOW - pd.Timedelta(days=1)))
    feast = applied(stack_env, object_store)
    key = layout_of(feast).keys(np.array([7]))[0]
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])

    # Timestamps were never compared with Feast's: one second off went to Redis unnoticed.
    real_stamp = online_writer.timestamp_bytes
    monkeypatch.setattr(online_writer, "timestamp_bytes", lambda nanos: real_stamp(nanos + 1_000_000_000))
    with pytest.raises(FeastLayoutError, match=r"event timestamps of field _ts:movie_features differ from Feast 0\.67"):
        materialize_parallel(feast, *WINDOW, workers=1)
    assert not client.exists(key), "nothing is written when the self-check fails"
    monkeypatch.undo()

    # A wrong value encoding: refused before any write, naming the kind of field.
    monkeypatch.setattr(
        online_writer, "int64_values", lambda numbers: pa.array([b"\x20" + bytes([int(v) & 0x7F]) for v in numbers])
    )
    with pytest.raises(FeastLayoutError, match=r"int64 values \(128\) of field INT64 differ from Feast 0\.67"):
        materialize_parallel(feast, *WINDOW, workers=1)
    assert not client.exists(key)
    monkeypatch.undo()

    # The reader compares its decoding with Feast's parser when it is built.
    materialize_parallel(feast, *WINDOW, workers=1)
    store = feast.store()
    monkeypatch.setattr(online_writer, "decode_value", lambda raw: 0.0)
    with pytest.raises(FeastLayoutError, match=r"decoded values \(-1\.5\) of field double_val differ from Feast 0\.67"):
        online_writer.OnlineReader(store, store.get_feature_view("movie_features"))


def test_another_feast_version_is_refused_naming_both_versions(stack_env, object_store, monkeypatch):
    from movie_assets.resources import feast_private

    write_offline(object_store, "2024-01-01", feature_rows([7], NOW - pd.Timedelta(days=1)))
    feast = applied(stack_env, object_store)
    key = layout_of(feast).keys(np.array([7]))[0]
    monkeypatch.setattr(feast_private, "installed_feast_version", lambda: "0.68.2")
    with pytest.raises(feast_private.FeastLayoutError) as refused:
        materialize_parallel(feast, *WINDOW, workers=1)
    message = str(refused.value)
    assert "Feast 0.68.2 is installed" in message and "checked against Feast 0.67" in message
    assert "feast==0.67.*" in message and "FEAST_LAYOUT_VERSION" in message
    assert not redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"]).exists(key)


def test_the_multi_process_writer_forks_inside_a_dagster_step_and_online_equals_offline(
    stack_env, object_store, monkeypatch, database
):
    import os

    from movie_assets.resources.object_store import ObjectStore
    from movie_assets.resources.online_materialize import PARALLEL_FROM_ROWS
    from movie_assets.resources.online_writer import OnlineReader

    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # two writer processes on any machine
    n = PARALLEL_FROM_ROWS + 4_000
    rows = feature_rows(range(1, n + 1), NOW - pd.Timedelta(days=1))
    rows.loc[3, "runtime"] = None
    write_offline(object_store, "2024-01-01", rows[rows["movie_id"] % 2 == 0])
    write_offline(object_store, "2024-02-01", rows[rows["movie_id"] % 2 == 1])
    feast = own_feast_project(stack_env, object_store.storage_url)
    resources = {
        "feast": feast,
        "object_store": ObjectStore(storage_url=object_store.storage_url),
        "database": database,
    }
    result = dg.materialize([feast_definitions, online_features], resources=resources)
    metadata = result.asset_materializations_for_node("online_features")[0].metadata
    assert metadata["write_path"].text == "parallel" and metadata["writer_processes"].value == 2
    assert metadata["movies_written"].value == n
    assert all(c.passed for c in result.get_asset_check_evaluations())

    store = feast.store()
    online = OnlineReader(store, store.get_feature_view("movie_features")).read(rows["movie_id"].tolist())
    offline = rows.set_index("movie_id")[online.columns].astype("float64")
    pd.testing.assert_frame_equal(online, offline, check_names=False)


def test_pull_latest_picks_the_rows_feasts_own_offline_store_pulls(stack_env, object_store):
    """Arrow pull vs Feast's dask pull on the same Parquet: the newest event time per movie, both window ends in;
    on equal event times the later `created` wins (Feast's documented rule; its dask sort is not stable there)."""
    from movie_assets.resources.online_materialize import pull_latest

    ids = np.arange(1, 61)
    days = [NOW - pd.Timedelta(days=d) for d in (30, 20, 10)]
    rows = pd.concat([feature_rows(ids, day).assign(runtime=float(k)) for k, day in enumerate(days)])
    write_offline(object_store, "2024-01-01", rows[rows["movie_id"] % 2 == 0])
    write_offline(object_store, "2024-02-01", rows[rows["movie_id"] % 2 == 1])
    feast = applied(stack_env, object_store)
    store = feast.store()
    view = store.get_feature_view("movie_features")
    source = view.batch_source

    def ordered(table: pa.Table) -> pd.DataFrame:
        frame = table.to_pandas()
        return frame[sorted(frame.columns)].sort_values("movie_id").reset_index(drop=True)

    second_window = (days[0].to_pydatetime(), days[1].to_pydatetime())
    for start, end in [WINDOW, second_window]:
        theirs = store.provider.offline_store.pull_latest_from_table_or_query(
            config=store.config,
            data_source=source,
            join_key_columns=["movie_id"],
            feature_name_columns=[feature.name for feature in view.features],
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_column,
            start_date=start,
            end_date=end,
        ).to_arrow()
        ours = pull_latest(feast, view, start, end)
        assert ours.num_rows == len(ids)
        pd.testing.assert_frame_equal(ordered(ours), ordered(theirs), check_dtype=False)
    assert set(ordered(ours)["runtime"]) == {1.0}  # the window's end (day 20) is in, day 10 is not

    recreated = feature_rows(ids[::3], days[1]).assign(runtime=9.0, created=days[1] + pd.Timedelta(seconds=5))
    write_offline(object_store, "2024-03-01", recreated)
    latest = ordered(pull_latest(feast, view, *second_window))
    assert (latest["runtime"] == np.where(latest["movie_id"] % 3 == 1, 9.0, 1.0)).all()


def test_applying_the_definitions_removes_the_expiry_of_keys_written_under_a_ttl(stack_env, object_store):
    """A key from the 90-day-TTL days keeps its PEXPIREAT through later writes: feast_definitions drops it."""
    write_offline(object_store, "2024-01-01", feature_rows([21, 22], NOW - pd.Timedelta(days=1)))
    feast = applied(stack_env, object_store)
    materialize_parallel(feast, *WINDOW, workers=1)
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    old, other = layout_of(feast).keys(np.array([21, 22]))
    client.pexpire(old, 86_400_000)  # as the old writer left it
    result = dg.materialize([feast_definitions], resources={"feast": feast})
    assert [client.pttl(key) for key in (old, other)] == [-1, -1]
    metadata = result.asset_materializations_for_node("feast_definitions")[0].metadata
    assert metadata["online_keys_persisted"].value == 1
