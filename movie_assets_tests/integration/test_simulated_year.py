"""A simulated year: every day TMDB changes, the sync runs, and the automation alone carries it everywhere.

`make test` runs its first two weeks (two weekly retrains, about 3 minutes); `make test-year`
runs all 365 days (MOVIE_SIMULATED_DAYS=365, about 78 minutes here: each simulated day is a real sync,
three automation evaluations and the runs they ask for, at about 10 s a day on two cores).

The catalogue is the 24 sample months at 215 movies a month (5,070) on the local TMDB
server, crawled once. Then each simulated day at 06:00 UTC brings a batch of changes listed
under that day (vote counts and averages of 2% of the movies, two release dates moved, three
new movies, one deletion), the change sync runs, and Dagster's own evaluator decides what runs
at that day's time (`evaluate_automation_conditions(..., evaluation_time=..., cursor=...)`),
tick after tick until it asks for nothing. What it asks for is executed as the sensor would
launch it: one run per tick and set of months, months of a range in one run (single-run
backfill policy). The weekly retrain comes from its cron (Mondays 04:00 UTC), nothing else.

After every day: every movie's online values equal its newest offline row and the server's
truth, the deleted ones are gone from every store, every movie has a prediction, no run failed.
Every 30 days a table of the growing stores is printed; the growth is bounded at the end.
"""

import datetime as dt
import math
import os
import time
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import redis
from psycopg import sql

from movie_assets.assets import features, ingest, prepare, training
from movie_assets.automation.policies import with_policies
from movie_assets.checks import ONLINE_STORE_CHECKS, STORAGE_CHECKS
from movie_assets.domain import clock
from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.jobs.sync_tmdb_changes import sync_tmdb_changes
from movie_assets.object_layout import FEATURES_OBJECT_PATH
from movie_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, release_month_partitions
from movie_assets.resources.online_writer import FeastRedisLayout
from movie_assets.resources.serving import online_feature_rows
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import movies_for_month, sample_months
from movie_assets_tests.conftest import own_feast_project, own_tracking, platform_resources
from movie_assets_tests.integration.dagster_instance import own_instance_home
from movie_assets_tests.integration.test_daemon import same
from movie_assets_tests.tmdb_server import FakeTmdb, TmdbTestServer

DAYS = int(os.environ.get("MOVIE_SIMULATED_DAYS") or "14")
TABLE_EVERY = 30 if DAYS >= 90 else 7  # days between two rows of the growth table
MOVIES_PER_MONTH = 215  # x 24 sample months (each within 15%): 5,072 movies
START = dt.datetime(2025, 1, 6, 6, tzinfo=dt.timezone.utc)  # a Monday; each day's changes land at 06:00 UTC
VOTE_SHARE, MOVED, NEW, DELETED = 0.02, 2, 3, 1
MAX_TICKS = 6  # a day settles in three (months, then the online store and scores); more is a loop
# The order a run of each asset comes in within a tick: each after its inputs.
ORDER = [
    "movies_raw_backup",
    "movies_clean",
    "eda_stats",
    "movie_features",
    "feast_definitions",
    "online_features",
    "movie_rating_model",
    "movie_rating_predictions",
]


@dataclass
class Year:
    """What the simulation carries from day to day."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    resources: dict
    server: TmdbTestServer
    rng: np.random.Generator
    cursor: object = None
    deleted: set[int] = field(default_factory=set)
    changes: int = 0  # movies TMDB changed, added or deleted so far
    moves: int = 0
    next_id: int = 990_000_001
    runs: int = 0
    rows: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # where the simulated days spent their time

    def timed(self, what: str, began: float) -> None:
        self.seconds[what] = self.seconds.get(what, 0.0) + time.monotonic() - began


@pytest.fixture
def instance(stack_env, tmp_path):
    """A Dagster instance on PostgreSQL of the test's own, as `movie-platform up` writes it."""
    with own_instance_home(stack_env["MOVIE_DB_URL"], tmp_path / "dagster_home", "dagster_year") as home:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # Pooled connections, as the webserver holds them: the daemon's storage opens one per query
            # (4 ms of authentication each, most of an evaluation's time here); what runs is the same.
            instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
            yield instance


@pytest.fixture
def tracking(stack_env):
    with own_tracking(stack_env, "year") as tracking:
        yield tracking


@pytest.fixture(autouse=True)
def reset_clock():
    yield
    clock.set_now(None)


def platform_definitions(resources: dict) -> dg.Definitions:
    """The code location's assets, checks and automation conditions, on the test's resources."""
    assets = with_policies(dg.load_assets_from_modules([ingest, prepare, features, training]))
    return dg.Definitions(assets=assets, asset_checks=[*STORAGE_CHECKS, *ONLINE_STORE_CHECKS], resources=resources)


def launch(year: Year, selection: list[str], tags: dict | None = None, partition: str | None = None) -> None:
    """One run, as the sensor (or its backfill) launches it; a failed run fails the year."""
    keys = {dg.AssetKey(k) for k in selection}
    job = year.defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    result = job.execute_in_process(instance=year.instance, partition_key=partition, tags=tags, raise_on_error=False)
    year.runs += 1
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        pytest.fail(f"{clock.now():%Y-%m-%d}: run of {selection} {partition or tags} failed: {failures}")


def month_ranges(partitions: set[str]) -> list[tuple[str, str]]:
    """Contiguous runs of months, as a single-run backfill policy splits a request."""
    keys = release_month_partitions.get_partition_keys()
    positions = sorted(keys.index(p) for p in partitions)
    ranges: list[list[int]] = []
    for position in positions:
        if ranges and position == ranges[-1][1] + 1:
            ranges[-1][1] = position
        else:
            ranges.append([position, position])
    return [(keys[a], keys[b]) for a, b in ranges]


def tick(year: Year) -> int:
    """One evaluation at the clock's time; runs what it asks for. Returns the asset partitions asked for."""
    began = time.monotonic()
    result = dg.evaluate_automation_conditions(
        defs=year.defs, instance=year.instance, cursor=year.cursor, evaluation_time=clock.now()
    )
    year.timed("evaluations", began)
    year.cursor = result.cursor
    asked = {
        key.to_user_string(): set(result.get_requested_partitions(key))
        for key in year.defs.resolve_asset_graph().get_all_asset_keys()
        if result.get_num_requested(key)
    }
    assert set(asked) <= set(ORDER), f"asked for assets the year does not order: {asked}"
    groups: dict[frozenset, list[str]] = {}
    for key in ORDER:
        if key in asked:
            groups.setdefault(frozenset(asked[key]), []).append(key)
    for partitions, selection in sorted(groups.items(), key=lambda g: ORDER.index(g[1][0])):
        if partitions == {None}:
            launch(year, selection)
            continue
        for first, last in month_ranges(set(partitions)):
            if first == last:
                launch(year, selection, partition=first)
            else:
                launch(year, selection, tags={RANGE_START_TAG: first, RANGE_END_TAG: last})
    return sum(len(p) for p in asked.values())


def settle(year: Year) -> int:
    """Ticks a minute apart until one asks for nothing; returns how many asked for something."""
    for n in range(MAX_TICKS):
        if not tick(year):
            return n
        clock.set_now(clock.now() + dt.timedelta(minutes=1))
    pytest.fail(f"{clock.now():%Y-%m-%d}: the automation still asked for runs after {MAX_TICKS} ticks")


def a_day_of_changes(year: Year, day: dt.date) -> None:
    """2% of the movies get new votes, two move to another month, three are new, one is deleted."""
    fake = year.server.fake
    catalogue = fake.catalogue()
    ids = np.array(sorted(catalogue))
    picked = year.rng.choice(ids, size=int(VOTE_SHARE * len(ids)) + MOVED + DELETED, replace=False).tolist()
    voted, moved, deleted = (
        picked[: -MOVED - DELETED],
        picked[-MOVED - DELETED : -DELETED],
        picked[-DELETED:],
    )
    months = sample_months()
    changes: dict[int, dict | None] = {}
    for movie_id in voted:
        truth = catalogue[movie_id]
        votes = int(truth["vote_count"]) + int(year.rng.integers(1, 40))
        # A first vote gives a movie its first average; later ones move it a little.
        before = float(truth["vote_average"]) if int(truth["vote_count"]) else float(year.rng.uniform(4, 8))
        average = float(np.clip(before + year.rng.normal(0, 0.15), 0, 10))
        changes[movie_id] = {**truth, "vote_count": votes, "vote_average": round(average, 3)}
    for movie_id in moved:
        month = months[int(year.rng.integers(len(months)))]
        changes[movie_id] = {**catalogue[movie_id], "release_date": month.replace(day=14).isoformat()}
    template = catalogue[voted[0]]
    for _ in range(NEW):
        month = months[int(year.rng.integers(len(months)))]
        movie_id, year.next_id = year.next_id, year.next_id + 1
        changes[movie_id] = {
            **template,
            "id": movie_id,
            "imdb_id": f"tt{movie_id}",
            "title": f"New {movie_id}",
            "release_date": month.replace(day=int(year.rng.integers(1, 28))).isoformat(),
            # a remake of the template: its votes and average, give or take (the features can explain it)
            "vote_average": round(float(np.clip(float(template["vote_average"]) + year.rng.normal(0, 0.3), 0, 10)), 3),
        }
    for movie_id in deleted:
        changes[movie_id] = None
    fake.change_many(day, changes)
    year.deleted.update(deleted)
    year.changes += len(changes)
    year.moves += len(moved)


def query(year: Year, text: str, params=None) -> list[tuple]:
    database = year.resources["database"]
    with database.connect() as conn:
        return conn.execute(sql.SQL(text).format(schema=sql.Identifier(database.db_schema)), params).fetchall()


def offline_newest(year: Year) -> pd.DataFrame:
    """Each movie's newest row in the offline store (the features Parquet of every month), by movie_id."""
    store = year.resources["object_store"]
    frames = []
    for month in sample_months():
        path = store.path_for(FEATURES_OBJECT_PATH, month.isoformat())
        if path.exists():
            frames.append(pd.read_parquet(path.open("rb")))
    rows = pd.concat(frames).sort_values("event_timestamp")
    return rows.drop_duplicates("movie_id", keep="last").set_index("movie_id")


def disagreements(year: Year) -> dict[str, list]:
    """Per store, the movies that disagree with TMDB's truth or with each other (empty: all agree).

    Every movie TMDB has is in movies_raw with its votes and month, or in movies_rejected with a
    reason (the sample's blank titles); those cleaning keeps (all but the ones in movies_clean_dropped,
    each with a reason) are in movies_clean, offline, online and scored.
    """
    truth = year.server.fake.catalogue()
    found: dict[str, list] = {}
    raw = {m: (v, r) for m, v, r in query(year, "select movie_id, vote_count, release_month from {schema}.movies_raw")}
    rejected = {r[0] for r in query(year, "select movie_id from {schema}.movies_rejected")}
    found["movies_raw != TMDB"] = sorted(
        (set(raw) | rejected) ^ set(truth)
        | (set(raw) & rejected)
        | {m for m in truth if m in raw and raw[m] != (int(truth[m]["vote_count"]), month_of(truth[m]))}
    )
    dropped = {r[0] for r in query(year, "select movie_id from {schema}.movies_clean_dropped")}
    ids = sorted(set(raw) - dropped)
    clean_rows = query(year, "select movie_id, vote_count, vote_average from {schema}.movies_clean")
    clean = {m: (v, a) for m, v, a in clean_rows}
    found["movies_clean != TMDB"] = sorted(set(clean) - set(ids)) + [
        m
        for m in ids
        if clean.get(m) is None
        or clean[m][0] != int(truth[m]["vote_count"])
        or not same(clean[m][1], float(truth[m]["vote_average"]) if int(truth[m]["vote_count"]) else None)
    ]
    offline = offline_newest(year)
    found["offline != TMDB"] = [
        m
        for m in ids
        if m not in offline.index
        or not math.isclose(offline.at[m, "log_vote_count"], math.log1p(int(truth[m]["vote_count"])), rel_tol=1e-9)
    ]
    online = online_feature_rows(year.resources["feast"], ids)
    found["online != offline"] = [
        m for m in ids if m in offline.index and not all(same(online.at[m, n], offline.at[m, n]) for n in FEATURE_NAMES)
    ]
    scored = dict(query(year, "select movie_id, count(*) from {schema}.predictions group by movie_id"))
    found["predictions"] = [m for m in ids if scored.get(m) != 1]
    deleted = sorted(year.deleted)
    for table in ("movies_raw", "movies_clean", "features", "predictions"):
        sql_text = f"select movie_id from {{schema}}.{table} where movie_id = any(%s)"
        found[f"deleted, in {table}"] = [r[0] for r in query(year, sql_text, (deleted,))]
    found["deleted, offline"] = [m for m in deleted if m in offline.index]
    gone = online_feature_rows(year.resources["feast"], deleted) if deleted else pd.DataFrame()
    found["deleted, online"] = [m for m in deleted if not gone.loc[m, FEATURE_NAMES].isna().all()]
    return {store: movies[:10] for store, movies in found.items() if movies}


def month_of(details: dict) -> dt.date:
    return dt.date.fromisoformat(details["release_date"]).replace(day=1)


def growth(year: Year, day: int) -> dict:
    """The growing stores: runs, rows per table, Parquet objects, Redis memory, event-log rows, RMSE."""
    tables = [
        r[0]
        for r in query(
            year,
            "select table_name from information_schema.tables where table_schema = %s order by 1",
            (year.resources["database"].db_schema,),
        )
    ]
    rows = {t: query(year, f"select count(*) from {{schema}}.{t}")[0][0] for t in tables}
    store = year.resources["object_store"]
    objects = [p.stat().st_size for p in store.root.rglob("*.parquet")]
    feast = year.resources["feast"].store()
    layout = FeastRedisLayout(feast, feast.get_feature_view("movie_features"))
    client = redis.Redis.from_url(year.resources["feast"].redis_url)
    keys = layout.keys(np.array(sorted(year.server.fake.catalogue())))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key)
    redis_bytes = sum(n or 0 for n in pipe.execute())
    model = year.instance.get_latest_materialization_event(dg.AssetKey("movie_rating_model"))
    rmse = model.asset_materialization.metadata["rmse"].value if model else float("nan")
    return {
        "day": day,
        "runs": year.runs,
        "movies": len(year.server.fake.catalogue()),
        "features rows": rows.get("features", 0),
        "feature history rows": rows.get("features_history", 0),
        "eda history rows": rows.get("eda_stats_history", 0),
        "PostgreSQL rows": sum(rows.values()),
        "Parquet objects": len(objects),
        "Parquet MiB": round(sum(objects) / 2**20, 1),
        "Redis KiB": round(redis_bytes / 1024),
        "event-log rows": event_log_rows(year.instance),
        "training RMSE": round(float(rmse), 3),
    }


def event_log_rows(instance: dg.DagsterInstance) -> int:
    with instance.event_log_storage.index_connection() as conn:  # type: ignore[attr-defined]
        return conn.exec_driver_sql("select count(*) from event_logs").scalar()


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


def test_a_simulated_year_keeps_every_store_equal_to_tmdb(database, object_store, stack_env, instance, tracking):
    movies = [m for month in sample_months() for m in movies_for_month(month, MOVIES_PER_MONTH)]
    assert len(movies) >= 5000
    started = time.monotonic()
    with TmdbTestServer(FakeTmdb(movies)) as server:
        client = TmdbApiClient(base_url=server.base_url, api_key="test-key", requests_per_second=1000)
        resources = {
            **platform_resources(database, object_store, client),
            "feast": own_feast_project(stack_env, object_store.storage_url),
            "mlflow_tracking": tracking,
        }
        year = Year(platform_definitions(resources), instance, resources, server, np.random.default_rng(2025))
        first, last = sample_months()[0].isoformat(), sample_months()[-1].isoformat()
        clock.set_now(START - dt.timedelta(days=1))
        launch(year, ["movies_raw"], tags={RANGE_START_TAG: first, RANGE_END_TAG: last})  # the crawl
        settle(year)  # a first start: the automation builds everything the crawl feeds
        assert not disagreements(year), disagreements(year)
        year.rows.append(growth(year, 0))
        print(f"crawled and settled in {time.monotonic() - started:.0f}s")
        for day in range(1, DAYS + 1):
            began = time.monotonic()
            clock.set_now(START + dt.timedelta(days=day - 1))
            a_day_of_changes(year, clock.today())
            assert sync_tmdb_changes.execute_in_process(resources=resources, instance=instance).success, day
            year.timed("sync", began)
            year.runs += 1
            ticks = settle(year)
            checked = time.monotonic()
            wrong = disagreements(year)
            year.timed("assertions", checked)
            assert not wrong, f"day {day} ({clock.today()}): {wrong}"
            print(f"day {day} ({clock.today():%a %Y-%m-%d}): {ticks} ticks asked, {time.monotonic() - began:.1f}s")
            if day % TABLE_EVERY == 0 or day == DAYS:
                year.rows.append(growth(year, day))
                print_table(year.rows)  # as it grows: a long run shows its table while it runs
                print("seconds so far:", {what: round(s) for what, s in year.seconds.items()})
        print(f"{DAYS} simulated days in {time.monotonic() - started:.0f}s")
        assert_bounded(year)


def assert_bounded(year: Year) -> None:
    """Growth follows the changes, not the catalogue times the materializations; nothing compounds."""
    first, last = year.rows[0], year.rows[-1]
    assert last["features rows"] <= last["movies"], "one current offline row per movie"
    assert last["feature history rows"] <= year.changes + year.moves, (
        "a history row per changed movie (two for a move), not per materialization"
    )
    per_movie = [row["Redis KiB"] / row["movies"] for row in (first, last)]
    assert per_movie[1] <= 1.25 * per_movie[0], f"Redis memory per movie grew: {per_movie}"
    # The event log grows by the day's runs: the last window adds no more per day than the second one.
    window = [b["event-log rows"] - a["event-log rows"] for a, b in zip(year.rows, year.rows[1:], strict=False)]
    days = [b["day"] - a["day"] for a, b in zip(year.rows, year.rows[1:], strict=False)]
    rates = [rows / n for rows, n in zip(window, days, strict=True)]
    assert len(rates) >= 2, "the growth table needs two windows (MOVIE_SIMULATED_DAYS of 14 or more)"
    baseline = rates[1] if len(rates) > 2 else rates[0]  # past the first window where there are three
    assert rates[-1] <= 1.5 * baseline, f"event-log rows per day: {rates}"
