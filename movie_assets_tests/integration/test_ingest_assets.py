"""movies_raw and movies_raw_backup against real PostgreSQL, a real object store and the local TMDB server."""

import datetime as dt
import hashlib
import logging
import os
import subprocess
import sys

import dagster as dg
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from movie_assets.assets.ingest import movies_raw, movies_raw_backup
from movie_assets.checks import MONTHLY_CHECKS
from movie_assets.dagster_private import latest_check_per_partition
from movie_assets.domain.movie_records import RAW_COLUMNS, validate_month
from movie_assets.jobs.restore import restore_movies_raw_from_backup
from movie_assets.object_layout import RAW_BACKUP_PATH
from movie_assets.resources.postgres import PostgresError
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import TmdbSampleSource, movies_for_month
from movie_assets_tests.conftest import platform_resources, with_storage_checks
from movie_assets_tests.tmdb_server import FakeTmdb, Faults, TmdbTestServer, sample_as_of

RANGE = ("2024-01-01", "2024-03-01")
RANGE_TAGS = {"dagster/asset_partition_range_start": RANGE[0], "dagster/asset_partition_range_end": RANGE[1]}
SECRET = "tmdb-secret-key-7f3a9"


def materialize(resources, instance=None, tags=RANGE_TAGS, assets=(movies_raw, movies_raw_backup), raise_on_error=True):
    return dg.materialize(
        with_storage_checks(*assets),
        resources=resources,
        tags=tags,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def table_checksum(database, table="movies_raw", exclude=("fetched_at",)) -> tuple[int, str]:
    columns = [c for c in RAW_COLUMNS if c not in exclude]
    query = sql.SQL("select {} from {} order by movie_id").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), database.ident(table)
    )
    with database.connect() as conn:
        rows = conn.execute(query).fetchall()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def fetched_days(database) -> set[dt.date]:
    """The UTC days on which the stored movies were fetched, by the crawl's clock."""
    query = sql.SQL("select distinct (fetched_at at time zone 'UTC')::date from {}")
    query = query.format(database.ident("movies_raw"))
    with database.connect() as conn:
        return {row[0] for row in conn.execute(query)}


def expected_rows(months: list[str]) -> tuple[set[int], int]:
    ids, rejects = set(), 0
    for key in months:
        start = dt.date.fromisoformat(key)
        window = (start, (start + dt.timedelta(days=32)).replace(day=1))
        movies = movies_for_month(start)
        result = validate_month([(m.list_item, m.details) for m in movies], window, dt.datetime.now(dt.timezone.utc))
        ids |= {r["movie_id"] for r in result.rows}
        rejects += len(result.rejects)
    return ids, rejects


def test_range_materializes_in_one_run_from_the_sample(database, object_store):
    result = materialize(platform_resources(database, object_store, TmdbSampleSource()))
    assert result.success
    # One run materialized every partition of the range, for both assets. The crawl also reported each
    # month as it was stored, before the range's result, with progress counted in requests.
    months = ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert sorted(m.partition for m in result.asset_materializations_for_node("movies_raw_backup")) == months
    raw = result.asset_materializations_for_node("movies_raw")
    as_stored, of_the_range = raw[:3], raw[3:]
    assert [m.partition for m in as_stored] == months and sorted(m.partition for m in of_the_range) == months
    done = [m.metadata["range_requests_done"].value for m in as_stored]
    estimated = as_stored[0].metadata["range_requests_estimated"].value
    assert done == sorted(done) and done[-1] == sum(m.metadata["requests"].value for m in as_stored), done
    # The estimate (TMDB's count of movies, plus pages) is within 10% of what the crawl asked.
    assert abs(done[-1] - estimated) <= 0.1 * done[-1], (done, estimated)
    want_ids, want_rejects = expected_rows(["2024-01-01", "2024-02-01", "2024-03-01"])
    with database.connect() as conn:
        ids = [r[0] for r in conn.execute(sql.SQL("select movie_id from {}").format(database.ident("movies_raw")))]
        rejected = conn.execute(
            sql.SQL("select count(*), count(distinct reason) from {}").format(database.ident("movies_rejected"))
        ).fetchone()
    assert sorted(ids) == sorted(want_ids)
    assert rejected[0] == want_rejects > 0
    for key in ("2024-01-01", "2024-02-01", "2024-03-01"):
        assert object_store.path_for(RAW_BACKUP_PATH, key).exists()
    materialization = of_the_range[0]
    for field in ("rows", "rejected", "pages", "requests", "retries", "duration_s", "reject_reasons", "preview"):
        assert field in materialization.metadata, field
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "unique_movie_ids": True,
        "release_dates_inside_partition": True,
        "ids_and_titles_present": True,
        "rows_for_past_months": True,
        "source_verified_recently": True,  # fetched just now
    }


def test_local_tmdb_server_with_faults_and_no_secret_in_the_event_log(database, object_store, monkeypatch):
    months = ["2024-01-01", "2024-02-01", "2024-03-01"]
    movies = [m for key in months for m in movies_for_month(dt.date.fromisoformat(key))]
    faults = Faults(throttle_every=9, retry_after_s=0, error_every=13, duplicate_every_page=3)
    monkeypatch.setenv("TMDB_API_KEY", SECRET)
    instance = dg.DagsterInstance.ephemeral()
    with TmdbTestServer(FakeTmdb(movies, api_key=SECRET, faults=faults)) as server:
        tmdb = TmdbApiClient(
            base_url=server.base_url, api_key=dg.EnvVar("TMDB_API_KEY"), backoff_base_s=0.01, requests_per_second=500
        )
        result = materialize(platform_resources(database, object_store, tmdb), instance=instance)
        assert server.fake.requests["429"] > 0 and server.fake.requests["5xx"] > 0
    want_ids, want_rejects = expected_rows(months)
    with database.connect() as conn:
        ids = [r[0] for r in conn.execute(sql.SQL("select movie_id from {}").format(database.ident("movies_raw")))]
        rejects = conn.execute(sql.SQL("select count(*) from {}").format(database.ident("movies_rejected"))).fetchone()[
            0
        ]
    assert sorted(ids) == sorted(want_ids) and rejects == want_rejects
    logs = instance.all_logs(result.run_id)
    assert logs and not any(SECRET in str(record) for record in logs)


def test_401_fails_the_run_once_with_a_clear_message_and_no_secret(database, object_store, monkeypatch):
    monkeypatch.setenv("TMDB_API_KEY", SECRET)
    instance = dg.DagsterInstance.ephemeral()
    with TmdbTestServer(FakeTmdb(movies_for_month(dt.date(2024, 1, 1)), api_key="the-right-key")) as server:
        tmdb = TmdbApiClient(base_url=server.base_url, api_key=dg.EnvVar("TMDB_API_KEY"))
        result = materialize(platform_resources(database, object_store, tmdb), instance=instance, raise_on_error=False)
        assert server.fake.requests["401"] == 1, "no retries after a 401, neither in the client nor by the retry policy"
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "TMDB_API_KEY" in failure.event_specific_data.error.message
    assert not any(SECRET in str(record) for record in instance.all_logs(result.run_id))


def test_rematerializing_gives_identical_rows(database, object_store):
    resources = platform_resources(database, object_store, TmdbSampleSource())
    materialize(resources)
    first = table_checksum(database)
    first_backup = backup_lines(object_store)
    materialize(resources)
    assert table_checksum(database) == first
    assert first[0] > 300
    assert backup_lines(object_store) == first_backup and len(first_backup) > 100


def backup_lines(store) -> list[dict]:
    """The February backup's records without their fetch time (which a re-crawl renews)."""
    import gzip
    import json

    lines = gzip.decompress(store.path_for(RAW_BACKUP_PATH, "2024-02-01").read_bytes()).decode().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "fetched_at"} for line in lines]


def test_a_failed_write_of_the_main_table_keeps_the_previous_side_table_rows(database):
    """The month's rejects are replaced with its rows, in one transaction: before, a failed movies_raw
    write left the new rejects beside the old rows (4 of 5 earlier rejects lost in one case)."""
    from movie_assets.resources.postgres import TableRows

    window = (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    main = {"movie_id": "bigint", "release_month": "date", "genre_ids": "integer[]"}
    side = {"movie_id": "bigint", "release_month": "date", "reason": "text"}
    old_rejects = pd.DataFrame({"movie_id": [7, 8], "release_month": [window[0]] * 2, "reason": ["old"] * 2})
    good = pd.DataFrame({"movie_id": [1], "release_month": [window[0]], "genre_ids": [[1]]})
    database.replace_tables(
        [TableRows("probe_main", main, good), TableRows("probe_rejects", side, old_rejects)], "release_month", window
    )
    bad = pd.DataFrame({"movie_id": [2, 3], "release_month": [window[0]] * 2, "genre_ids": [[1], ["not-a-number"]]})
    new_rejects = old_rejects.assign(reason="new").head(1)
    with pytest.raises(psycopg.Error):
        database.replace_tables(
            [TableRows("probe_main", main, bad), TableRows("probe_rejects", side, new_rejects)],
            "release_month",
            window,
        )
    with database.connect() as conn:
        kept = conn.execute(
            sql.SQL("select movie_id, reason from {} order by 1").format(database.ident("probe_rejects"))
        ).fetchall()
        rows = conn.execute(sql.SQL("select movie_id from {}").format(database.ident("probe_main"))).fetchall()
    assert kept == [(7, "old"), (8, "old")] and rows == [(1,)]


def test_failed_write_leaves_the_previous_rows_intact(database):
    window = (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    good = pd.DataFrame(
        {"movie_id": [1, 2], "title": ["A", "B"], "release_month": [window[0]] * 2, "genre_ids": [[1], [2]]}
    )
    columns = {"movie_id": "bigint", "title": "text", "release_month": "date", "genre_ids": "integer[]"}
    database.replace_rows("probe", columns, good, "release_month", window)
    bad = pd.DataFrame(
        {
            "movie_id": list(range(100, 50_100)),
            "title": ["x"] * 50_000,
            "release_month": [window[0]] * 50_000,
            "genre_ids": [[1]] * 49_999 + [["not-a-number"]],
        }
    )
    with pytest.raises(psycopg.Error):
        database.replace_rows("probe", columns, bad, "release_month", window)
    with database.connect() as conn:
        rows = conn.execute(
            sql.SQL("select movie_id, title from {} order by 1").format(database.ident("probe"))
        ).fetchall()
    assert rows == [(1, "A"), (2, "B")]


def test_rows_outside_the_partition_are_refused(database):
    window = (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    frame = pd.DataFrame({"movie_id": [1], "release_month": [dt.date(2024, 3, 1)]})
    with pytest.raises(PostgresError, match="outside 2024-01-01..2024-02-01"):
        database.replace_rows("probe", {"movie_id": "bigint", "release_month": "date"}, frame, "release_month", window)


def test_unreachable_postgres_names_service_and_remedy():
    from movie_assets.resources.postgres import PostgresDatabase

    db = PostgresDatabase(url="postgresql://movie:hunter2@127.0.0.1:9/movies")
    with pytest.raises(PostgresError) as error:
        db.replace_rows("movies_raw", {"movie_id": "bigint"}, pd.DataFrame({"movie_id": [1]}))
    message = str(error.value)
    assert "PostgreSQL at postgresql://movie:***@127.0.0.1:9/movies is unreachable" in message
    assert "MOVIE_DB_URL" in message and "hunter2" not in message


@pytest.mark.parametrize("store_fixture", ["object_store", "s3_object_store"])
def test_restore_rebuilds_movies_raw_from_the_backup(database, store_fixture, request):
    store = request.getfixturevalue(store_fixture)
    resources = platform_resources(database, store, TmdbSampleSource())
    materialize(resources)
    before = table_checksum(database, exclude=())
    with database.connect() as conn:
        conn.execute(sql.SQL("drop table {}").format(database.ident("movies_raw")))
    instance = dg.DagsterInstance.ephemeral()
    result = restore_movies_raw_from_backup.execute_in_process(resources=resources, instance=instance)
    assert result.success
    assert table_checksum(database, exclude=()) == before
    restored = [e.partition for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert restored == ["2024-01-01", "2024-02-01", "2024-03-01"]
    # Each restored month passed the crawl's storage checks, evaluated against its restored materialization.
    raw_checks = [dg.AssetCheckKey(movies_raw.key, c.name) for c in MONTHLY_CHECKS if c.asset == "movies_raw"]
    newest = {
        month: instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=movies_raw.key, asset_partitions=[month]), limit=1
        ).records[0]
        for month in restored
    }
    checked = {(r.partition, r.check_key.name): r for r in latest_check_per_partition(instance, raw_checks, restored)}
    assert set(checked) == {(month, key.name) for month in restored for key in raw_checks}
    for (month, _), row in checked.items():
        assert row.run_id == result.run_id and row.target_storage_id == newest[month].storage_id
        assert row.status == "SUCCEEDED", (month, row)


def test_cli_materializes_a_range_in_one_run_from_sample_and_local_server(stack_env, tmp_path, database):
    base_env = {
        **os.environ,
        **stack_env,
        "MOVIE_DB_SCHEMA": database.db_schema,
        "MOVIE_STORAGE_URL": (tmp_path / "objects").as_uri(),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    command = [
        str(os.path.join(os.path.dirname(sys.executable), "dagster")),
        "asset",
        "materialize",
        "-m",
        "movie_assets",
        "--select",
        "movies_raw,movies_raw_backup",
        "--partition-range",
        "2024-01-01...2024-03-01",
    ]
    sample = subprocess.run(
        command, capture_output=True, text=True, env={**base_env, "TMDB_SOURCE": "sample"}, timeout=600
    )
    assert sample.returncode == 0, sample.stderr[-3000:]
    sample_count = table_checksum(database)
    months = [f"2024-{m:02d}-01" for m in range(1, 4)]
    # The local server answers the sample's world on the day the sample crawl ran (its clock's, as stored).
    (crawl_day,) = fetched_days(database)
    movies = sample_as_of([dt.date.fromisoformat(key) for key in months], crawl_day)
    with TmdbTestServer(FakeTmdb(movies, api_key=SECRET, faults=Faults(throttle_every=25, retry_after_s=0))) as server:
        api_env = {**base_env, "TMDB_SOURCE": "api", "TMDB_BASE_URL": server.base_url, "TMDB_API_KEY": SECRET}
        api = subprocess.run(command, capture_output=True, text=True, env=api_env, timeout=600)
    assert api.returncode == 0, api.stderr[-3000:]
    assert SECRET not in api.stdout + api.stderr
    assert table_checksum(database) == sample_count, "API and sample must store the same movies"
    assert sample_count[0] == len(expected_rows(months)[0])
    assert api.stderr.count("RUN_START") == 1 and "RUN_SUCCESS" in api.stderr
    # The instance's event log (SQLite) and the captured compute logs hold no trace of the key.
    stored = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert any(p.suffix in (".out", ".err") for p in stored) and any(p.suffix == ".db" for p in stored), stored
    assert [p for p in stored if SECRET.encode() in p.read_bytes()] == []


def test_a_column_declared_later_is_added_and_older_rows_get_null(database):
    """Before, `ensure_table` returned early for an existing table, so COPY failed on the new column."""
    january, february = (dt.date(2024, 1, 1), dt.date(2024, 2, 1)), (dt.date(2024, 2, 1), dt.date(2024, 3, 1))
    old = {"movie_id": "bigint", "release_month": "date"}
    database.replace_rows(
        "probe", old, pd.DataFrame({"movie_id": [1], "release_month": [january[0]]}), *("release_month", january)
    )
    new = {**old, "title": "text", "genre_ids": "integer[]"}
    frame = pd.DataFrame({"movie_id": [2], "release_month": [february[0]], "title": ["B"], "genre_ids": [[3, 4]]})
    database.replace_rows("probe", new, frame, "release_month", february)
    with database.connect() as conn:
        rows = conn.execute(
            sql.SQL("select movie_id, title, genre_ids from {} order by 1").format(database.ident("probe"))
        ).fetchall()
    assert rows == [(1, None, None), (2, "B", [3, 4])]


def test_a_column_declared_with_another_type_is_refused_before_writing(database):
    window = (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    columns = {"movie_id": "bigint", "release_month": "date", "title": "text"}
    database.replace_rows(
        "probe",
        columns,
        pd.DataFrame({"movie_id": [1], "release_month": [window[0]], "title": ["A"]}),
        "release_month",
        window,
    )
    retyped = {**columns, "title": "integer", "rank": "integer primary key"}
    frame = pd.DataFrame({"movie_id": [2], "release_month": [window[0]], "title": [7], "rank": [1]})
    with pytest.raises(PostgresError) as error:
        database.replace_rows("probe", retyped, frame, "release_month", window)
    message = str(error.value)
    assert f"{database.db_schema}.probe does not match its declared columns" in message
    assert "title is text in the table but declared integer" in message and "rank has type" in message
    with database.connect() as conn:
        rows = conn.execute(sql.SQL("select movie_id, title from {}").format(database.ident("probe"))).fetchall()
    assert rows == [(1, "A")], "nothing was written"


def test_io_manager_reads_partition_expr_and_reports_table_metadata_set(database):
    """Dagster's names: `partition_expr` picks the partition column, `dagster/table_name` the table, and the
    output carries `TableMetadataSet` (table, window rows, table rows, columns) instead of our own keys."""
    from dagster._core.definitions.metadata.metadata_set import TableMetadataSet

    from movie_assets.partitions import monthly_asset
    from movie_assets.resources.postgres import PostgresIOManager, table_schema

    columns = {"movie_id": "bigint", "day": "date"}

    @monthly_asset(
        io_manager_key="postgres_io_manager",
        metadata={
            "dagster/column_schema": table_schema(columns),
            "partition_expr": "day",
            "dagster/table_name": "probe_days",
        },
    )
    def days(context: dg.AssetExecutionContext) -> pd.DataFrame:
        start = context.partition_time_window.start.date()
        return pd.DataFrame({"movie_id": [1, 2], "day": [start, start + dt.timedelta(days=3)]})

    io_manager = PostgresIOManager(database=database)
    for month in ("2024-01-01", "2024-02-01"):
        result = dg.materialize([days], partition_key=month, resources={"postgres_io_manager": io_manager})
    metadata = TableMetadataSet.extract(result.asset_materializations_for_node("days")[0].metadata)
    assert metadata.table_name == f"{database.db_schema}.probe_days"
    assert (metadata.partition_row_count, metadata.row_count) == (2, 4)
    assert metadata.column_schema == table_schema(columns)
    with database.connect() as conn:
        stored = conn.execute(sql.SQL("select count(*) from {}").format(database.ident("probe_days"))).fetchone()
    assert stored == (4,)


def test_restore_refuses_a_month_crawled_again_after_its_backup_unless_configured(database, object_store):
    """Before, a month re-crawled since its backup was restored with its older rows and no word about it."""
    resources = platform_resources(database, object_store, TmdbSampleSource())
    materialize(resources)  # January..March and their backups
    materialize(resources, tags={"dagster/partition": "2024-02-01"}, assets=(movies_raw,))  # re-crawl, no backup
    before = table_checksum(database, exclude=())
    refused = restore_movies_raw_from_backup.execute_in_process(
        resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "1 month(s) were crawled again after their backup" in message and "2024-02 (backup " in message
    assert "2024-01" not in message and "restore_older_backups: true" in message
    assert failure.event_specific_data.user_failure_data.metadata["older_than_table"].value == "2024-02-01"
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in refused.all_events)
    assert table_checksum(database, exclude=()) == before, "nothing restored"

    instance = dg.DagsterInstance.ephemeral()
    forced = restore_movies_raw_from_backup.execute_in_process(
        resources=resources,
        instance=instance,
        run_config={"ops": {"restore_movies_raw": {"config": {"restore_older_backups": True}}}},
    )
    metadata = next(e for e in forced.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata
    assert metadata["older_than_table"].value.startswith("2024-02 (backup ")
    assert metadata["restored_months"].value == "2024-01-01, 2024-02-01, 2024-03-01"
    warnings = [r.user_message for r in instance.all_logs(forced.run_id) if r.level == logging.WARNING]
    assert any("whose backup is older than movies_raw" in w and "2024-02 (backup" in w for w in warnings), warnings
    flags = {
        e.partition: e.event_specific_data.materialization.metadata["backup_older_than_table"].value
        for e in forced.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert flags == {"2024-01-01": False, "2024-02-01": True, "2024-03-01": False}
    with database.connect() as conn:
        newest = conn.execute(
            sql.SQL("select max(fetched_at) from {} where release_month = '2024-02-01'").format(
                database.ident("movies_raw")
            )
        ).fetchone()[0]
    assert pd.Timestamp(newest) == max(pd.Timestamp(r["fetched_at"]) for r in backup_lines_with_time(object_store))


def backup_lines_with_time(store) -> list[dict]:
    import gzip
    import json

    return [
        json.loads(line)
        for line in gzip.decompress(store.path_for(RAW_BACKUP_PATH, "2024-02-01").read_bytes()).decode().splitlines()
    ]
