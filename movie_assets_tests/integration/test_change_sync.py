"""`sync_tmdb_changes` against the local TMDB server: six crawled months, one batch of changes, one sync.

The batch is what a day at TMDB looks like: 300 vote counts changed, 10 release dates moved to
another month, 20 new movies and 3 deleted ones. After the sync every touched movie equals
the server's truth, deleted ones are gone from every store, and the server's counters show
the cost: at most 1.2 detail requests per touched movie, and no discover crawl.
"""

import datetime as dt
import signal
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import redis
from psycopg import sql

from movie_assets.assets.features import feast_definitions, movie_features, online_features
from movie_assets.assets.ingest import movies_raw
from movie_assets.assets.prepare import movies_clean
from movie_assets.assets.training import PREDICTION_COLUMNS
from movie_assets.domain import clock
from movie_assets.domain.point_in_time import historical_features
from movie_assets.jobs.sync_tmdb_changes import CURSOR_NAME, CURSOR_TABLE, FETCHED_TABLE, sync_tmdb_changes
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.resources.online_writer import FeastRedisLayout
from movie_assets.resources.postgres import existing_tables
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import TmdbSampleSource, movies_for_month
from movie_assets_tests.conftest import own_feast_project, platform_resources
from movie_assets_tests.integration.sync_runner import start_sync
from movie_assets_tests.tmdb_server import FakeTmdb, Faults, TmdbTestServer

MONTHS = [dt.date(2024, m, 1) for m in range(1, 7)]
RANGE_TAGS = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-06-01"}
TODAY = dt.datetime.now(dt.timezone.utc).date()


def query(database, text: str, params=None) -> list[tuple]:
    with database.connect() as conn:
        return conn.execute(sql.SQL(text).format(schema=sql.Identifier(database.db_schema)), params).fetchall()


def crawled_platform(database, object_store, stack_env, server):
    """Six months crawled from the server through the real assets, down to the online store."""
    client = TmdbApiClient(base_url=server.base_url, api_key="test-key", requests_per_second=500)
    feast = own_feast_project(stack_env, object_store.storage_url)
    resources = {**platform_resources(database, object_store, client), "feast": feast}
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([movies_raw, movies_clean, movie_features], resources=resources, tags=RANGE_TAGS, instance=instance)
    dg.materialize([feast_definitions, online_features], resources=resources, instance=instance)
    clean = database.read_rows("movies_clean", {"movie_id": "bigint", "release_month": "date"})
    scores = clean.assign(
        predicted_vote_average=6.0,
        model_name="movie_rating_xgb",
        model_version="1",
        scored_at=pd.Timestamp.now(tz="UTC"),
    )
    database.replace_rows(
        "predictions",
        PREDICTION_COLUMNS,
        scores[list(PREDICTION_COLUMNS)],
        "release_month",
        (MONTHS[0], dt.date(2024, 7, 1)),
    )
    return resources


def a_day_of_changes(fake: FakeTmdb, stored: list[int]) -> dict[str, list[int]]:
    """300 vote changes, 10 moved months, 20 new movies, 3 deletions, all listed under today."""
    deleted, changed, moved = stored[:3], stored[3:303], stored[303:313]
    for movie_id in changed:
        truth = fake.truth(movie_id)
        fake.change(TODAY, movie_id, {**truth, "vote_count": int(truth["vote_count"]) + 1000})
    for movie_id in moved:
        truth = fake.truth(movie_id)
        release = dt.date.fromisoformat(truth["release_date"])
        later = (release.replace(day=15) + dt.timedelta(days=31)).replace(day=15)
        fake.change(TODAY, movie_id, {**truth, "release_date": later.isoformat()})
    template = fake.truth(changed[0])
    new = [880_000_000 + i for i in range(20)]
    for i, movie_id in enumerate(new):
        fake.change(
            TODAY, movie_id, {**template, "id": movie_id, "title": f"New {i}", "release_date": f"2024-02-{i + 1:02d}"}
        )
    for movie_id in deleted:
        fake.change(TODAY, movie_id, None)
    return {"changed": changed, "moved": moved, "new": new, "deleted": deleted}


@pytest.fixture
def server():
    movies = [m for month in MONTHS for m in movies_for_month(month)]
    with TmdbTestServer(FakeTmdb(movies)) as running:
        yield running


def stored_ids(database) -> list[int]:
    """Stored movies, those with features (so with online keys) first: the deleted ones are among them."""
    return [
        r[0]
        for r in query(
            database,
            "select r.movie_id from {schema}.movies_raw r left join {schema}.features f using (movie_id) "
            "order by f.movie_id is null, r.movie_id desc",
        )
    ]


def test_a_sync_makes_every_touched_movie_the_servers_truth_and_removes_deleted_ones(
    database, object_store, stack_env, server
):
    resources = crawled_platform(database, object_store, stack_env, server)
    touched = a_day_of_changes(server.fake, stored_ids(database))
    store = resources["feast"].store()
    layout = FeastRedisLayout(store, store.get_feature_view("movie_features"))
    client = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    deleted_keys = layout.keys(pd.Series(touched["deleted"]).to_numpy())
    assert client.exists(*deleted_keys) == 3, "the movies to delete are online before the sync"
    server.fake.requests.clear()
    instance = dg.DagsterInstance.ephemeral()
    result = sync_tmdb_changes.execute_in_process(resources=resources, instance=instance)
    assert result.success

    live = touched["changed"] + touched["moved"] + touched["new"]
    rows = query(
        database,
        "select movie_id, release_month, vote_count from {schema}.movies_raw where movie_id = any(%s)",
        (live,),
    )
    by_id: dict[int, list] = {}
    for movie_id, month, votes in rows:
        by_id.setdefault(movie_id, []).append((month, votes))
    for movie_id in live:
        truth = server.fake.truth(movie_id)
        month = dt.date.fromisoformat(truth["release_date"]).replace(day=1)
        assert by_id.get(movie_id) == [(month, int(truth["vote_count"]))], movie_id

    # A moved movie leaves its old month's clean rows with its raw row: a run of the new month alone
    # (the months of a tick need not be adjacent) must not find it stored twice.
    moved_rows = query(
        database, "select movie_id from {schema}.movies_clean where movie_id = any(%s)", (touched["moved"],)
    )
    assert moved_rows == []
    deleted = touched["deleted"]
    for table in ("movies_raw", "movies_clean", "movie_genres", "features", "predictions"):
        left = query(database, f"select movie_id from {{schema}}.{table} where movie_id = any(%s)", (deleted,))
        assert left == [], table
    removed = query(database, "select movie_id, reason from {schema}.movies_removed order by movie_id")
    assert [r[0] for r in removed] == sorted(deleted) and all("404" in r[1] for r in removed)
    offline = pd.concat(
        pd.read_parquet(object_store.path_for(FEATURES_OBJECT_PATH, m.isoformat()).open("rb")) for m in MONTHS
    )
    assert not offline["movie_id"].isin(deleted).any()
    assert client.exists(*deleted_keys) == 0

    # The cost, from the server's own counters.
    touched_count = len(live) + len(deleted)
    assert server.fake.requests["discover"] == 0
    assert server.fake.requests["details"] <= 1.2 * touched_count, server.fake.requests

    # Every touched month is a new movies_raw materialization that says what changed.
    mats = result.asset_materializations_for_node("apply_tmdb_changes")
    months = {m.partition: m.metadata for m in mats}
    total = {
        name: sum(md[name].value for md in months.values() if name in md)
        for name in ("changed", "moved_in", "moved_out", "new", "removed")
    }
    assert total == {"changed": 300, "moved_in": 10, "moved_out": 10, "new": 20, "removed": 3}
    assert query(database, f"select synced_through from {{schema}}.{CURSOR_TABLE} where name = %s", (CURSOR_NAME,)) == [
        (TODAY,)
    ]

    # The same change list again within the day (the hourly sync): nothing fetched twice, nothing duplicated.
    server.fake.requests.clear()
    again = sync_tmdb_changes.execute_in_process(resources=resources, instance=instance)
    assert again.success
    assert server.fake.requests["details"] == 0 and server.fake.requests["changes"] >= 1, server.fake.requests
    counts = query(database, "select count(*), count(distinct movie_id) from {schema}.movies_raw")
    assert counts[0][0] == counts[0][1]
    # After midnight those fetches are yesterday's: the day's list is read and fetched once more.
    with database.connect() as conn:
        conn.execute(sql.SQL("update {} set day = day - 1").format(sql.Identifier(database.db_schema, FETCHED_TABLE)))
    server.fake.requests.clear()
    assert sync_tmdb_changes.execute_in_process(resources=resources, instance=instance).success
    assert server.fake.requests["details"] == touched_count, server.fake.requests


def test_hostile_details_of_stored_movies_are_rejects_and_the_sync_moves_on(database, object_store, stack_env, server):
    """Each answer below once deleted a stored movie or stopped the sync; now each is one reject, the movie stays
    in every store as it was, and the cursor moves past the day."""
    resources = crawled_platform(database, object_store, stack_env, server)
    fake = server.fake
    null_body, list_body, swapped, adult_text, other = stored_ids(database)[:5]
    cases = {  # movie id -> (its details body, the reason its reject gives)
        null_body: (None, "not a JSON object"),
        list_body: ([fake.truth(list_body)], "not a JSON object"),
        swapped: (fake.truth(other), f"carry id {other}: another movie's document"),
        adult_text: ({**fake.truth(adult_text), "adult": "false"}, "adult is not a boolean"),
    }
    for movie_id, (body, _) in cases.items():
        fake.change(TODAY, movie_id, fake.truth(movie_id))  # listed under today
        fake.faults.details_bodies[movie_id] = body
    before = query(database, "select movie_id, vote_count, release_month from {schema}.movies_raw order by 1")
    client = TmdbApiClient(base_url=server.base_url, api_key="test-key", requests_per_second=500, backoff_base_s=0.01)
    result = sync_tmdb_changes.execute_in_process(
        resources={**resources, "tmdb": client}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success, "one record never stops the sync"
    assert query(database, "select movie_id, vote_count, release_month from {schema}.movies_raw order by 1") == before
    assert query(database, "select movie_id from {schema}.movies_removed") == []
    rejects = dict(query(database, "select movie_id, reason from {schema}.movies_rejected where reason like 'change%'"))
    assert set(rejects) == set(cases), rejects
    for movie_id, (_, reason) in cases.items():
        assert reason in rejects[movie_id], (movie_id, rejects[movie_id])
    store = resources["feast"].store()
    layout = FeastRedisLayout(store, store.get_feature_view("movie_features"))
    client_redis = redis.Redis.from_url(stack_env["MOVIE_REDIS_URL"])
    with_features = [
        r[0] for r in query(database, "select movie_id from {schema}.features where movie_id = any(%s)", (list(cases),))
    ]
    assert client_redis.exists(*layout.keys(np.array(with_features))) == len(with_features) > 0
    assert query(database, f"select synced_through from {{schema}}.{CURSOR_TABLE} where name = %s", (CURSOR_NAME,)) == [
        (TODAY,)
    ]


def test_a_killed_sync_changes_nothing_and_the_rerun_completes(database, object_store, stack_env, server):
    resources = crawled_platform(database, object_store, stack_env, server)
    touched = a_day_of_changes(server.fake, stored_ids(database))
    before = query(database, "select movie_id, release_month, vote_count from {schema}.movies_raw order by movie_id")
    server.fake.faults = Faults(latency_s=0.15)
    server.fake.requests.clear()
    run = start_sync(database, object_store, stack_env["MOVIE_REDIS_URL"], server.base_url, resources["feast"].project)
    deadline = time.monotonic() + 120
    while server.fake.requests["details"] < 60 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, f"the sync ended before it could be killed: {run.stderr.read().decode()[-2000:]}"
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    after = query(database, "select movie_id, release_month, vote_count from {schema}.movies_raw order by movie_id")
    assert after == before, "a killed sync must not have changed a row"
    with database.connect() as conn:
        assert existing_tables(conn, database.db_schema, [CURSOR_TABLE]) == [], "the cursor must not have moved"

    server.fake.faults = Faults()
    rerun = sync_tmdb_changes.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert rerun.success
    for movie_id in touched["changed"][:50] + touched["moved"]:
        truth = server.fake.truth(movie_id)
        rows = query(
            database, "select release_month, vote_count from {schema}.movies_raw where movie_id = %s", (movie_id,)
        )
        assert rows == [(dt.date.fromisoformat(truth["release_date"]).replace(day=1), int(truth["vote_count"]))]
    assert (
        query(database, "select movie_id from {schema}.movies_raw where movie_id = any(%s)", (touched["deleted"],))
        == []
    )


def test_feature_history_gives_the_value_of_its_time_from_data_the_platform_wrote(
    database, object_store, stack_env, server
):
    """Crawl, change sync, re-materialize: the point-in-time join returns the old value before the change."""
    from movie_assets.domain.feature_engineering import FEATURE_NAMES

    resources = crawled_platform(database, object_store, stack_env, server)
    first = query(database, "select max(event_timestamp) from {schema}.features")[0][0]
    movie_id = stored_ids(database)[0]
    old_votes = int(server.fake.truth(movie_id)["vote_count"])
    server.fake.change(TODAY, movie_id, {**server.fake.truth(movie_id), "vote_count": old_votes + 5000})
    assert sync_tmdb_changes.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral()).success
    time.sleep(1.1)  # event times have second precision: the next materialization is a new version
    month = dt.date.fromisoformat(server.fake.truth(movie_id)["release_date"]).replace(day=1).isoformat()
    dg.materialize(
        [movies_raw, movies_clean, movie_features],
        selection=[movies_clean, movie_features],
        resources=resources,
        partition_key=month,
    )
    second = query(database, "select max(event_timestamp) from {schema}.features")[0][0]
    assert second > first

    # History by change: only the changed movie's superseded row, in Postgres and in the month's history/ object.
    history = object_store.path_for(FEATURES_OBJECT_PATH, month).parent / "history"
    (archived,) = [p for p in history.iterdir() if p.name.endswith(".parquet")]
    assert pd.read_parquet(archived.open("rb"))["movie_id"].tolist() == [movie_id]
    versions = query(
        database,
        "select movie_id, event_timestamp, superseded_at from {schema}.features_history where release_month = %s",
        (month,),
    )
    assert versions == [(movie_id, first, second)]
    assert query(database, "select count(*) from {schema}.features where event_timestamp = %s", (second,)) == [(1,)]

    store = resources["feast"].store()
    entity = pd.DataFrame(
        {
            "movie_id": [movie_id, movie_id],
            "event_timestamp": [pd.Timestamp(first) + pd.Timedelta(milliseconds=500), pd.Timestamp(second)],
        }
    )
    joined = historical_features(store, entity, "movie_rating_v1").sort_values("event_timestamp")
    assert "log_vote_count" in FEATURE_NAMES
    before, after = joined["log_vote_count"].tolist()
    assert before == pytest.approx(np.log1p(old_votes)) and after == pytest.approx(np.log1p(old_votes + 5000))


def test_a_backfill_after_a_sync_of_the_sample_keeps_the_synced_values(database, object_store, stack_env):
    """Issue 29: after the demo's sync, a backfill of its months put every synced movie back to its older votes.

    The sample source through the real assets and the real sync, the clock moved from the crawl's day to the
    sync's: the re-crawl stores exactly what the sync stored, and changes nothing.
    """
    crawl_day = dt.datetime(2025, 3, 1, 12, tzinfo=dt.timezone.utc)
    sync_day = crawl_day + dt.timedelta(days=4, hours=3)
    feast = own_feast_project(stack_env, object_store.storage_url)
    resources = {**platform_resources(database, object_store, TmdbSampleSource()), "feast": feast}
    tags = {"dagster/asset_partition_range_start": "2023-04-01", "dagster/asset_partition_range_end": "2023-06-01"}
    votes = "select movie_id, vote_count, vote_average, release_month from {schema}.movies_raw order by movie_id"
    with clock.clock_at(crawl_day):
        dg.materialize([movies_raw], resources=resources, tags=tags, instance=dg.DagsterInstance.ephemeral())
    crawled = query(database, votes)
    with clock.clock_at(sync_day):
        sync = sync_tmdb_changes.execute_in_process(resources=resources, instance=dg.DagsterInstance.ephemeral())
        synced = query(database, votes)
        dg.materialize([movies_raw], resources=resources, tags=tags, instance=dg.DagsterInstance.ephemeral())
    recrawled = query(database, votes)
    metadata = next(e for e in sync.all_events if e.is_successful_output).step_output_data.metadata
    stored_before = {row[0] for row in crawled}  # the sync also adds the listed movies of months never crawled
    moved = {row[0] for row in set(synced) - set(crawled)} & stored_before
    assert sync.success and metadata["changed"].value == len(moved) > 20, (metadata["changed"], len(moved))
    went_back = sorted({row[0] for row in set(synced) - set(recrawled)})
    assert not went_back, f"the backfill put {len(went_back)} synced movies back to older votes: {went_back[:5]}"
    assert recrawled == synced
