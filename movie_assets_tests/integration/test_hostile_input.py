"""One crawled month in which every hostile record TMDB could send occurs: the rest of the month lands.

Each hostile movie becomes a reject with its reason (or, for an id sent as a string of
digits, a normal movie); none fails the month's COPY, and the run needs no retry. One
details response never finishes (a slow drip): the run still ends inside its deadlines,
and that movie lands from its list item.
"""

import copy
import datetime as dt
import json
import time

import dagster as dg

from movie_assets.assets.ingest import movies_raw
from movie_assets.domain.movie_records import validate_month
from movie_assets.resources.tmdb import TmdbApiClient
from movie_assets.resources.tmdb_sample import SampleMovie, movies_for_month
from movie_assets_tests.conftest import platform_resources, with_storage_checks
from movie_assets_tests.tmdb_server import FakeTmdb, Faults, TmdbTestServer

MONTH = dt.date(2024, 1, 1)
FIRST_ID = 990_000_001
DRIP_ID = FIRST_ID + 13  # its details body drips one byte at a time, 60 s in all: longer than the deadline
DEADLINE_S = 1.0


def hostile(template: SampleMovie, n: int, **changes) -> SampleMovie:
    """A copy of a real January movie with a fresh id and `changes` in both its list item and details."""
    movie = copy.deepcopy(template)
    for document in (movie.list_item, movie.details):
        document.update({"id": FIRST_ID + n, "title": f"Hostile {n}"})
        document.update(changes)
    return movie


def hostile_month(movies: list[SampleMovie]) -> tuple[list[SampleMovie], dict[str, str]]:
    """The month's movies plus one of each hostile case, and the reason each case's title must get."""
    t = movies[0]
    cases = {
        "NUL": (hostile(t, 1, title="Null\u0000Title"), "title contains a NUL byte"),
        "surrogate": (hostile(t, 2, overview="broken \ud800 text"), "overview contains a lone surrogate"),
        "5 MB": (hostile(t, 3, overview="x" * 5_000_000), "over the 1 MB limit"),
        "negative id": (hostile(t, 4, id=-1006), "id is not a positive integer: -1006"),
        "float id": (hostile(t, 5, id=1007.9), "id is not a positive integer: 1007.9"),
        "no id a": (hostile(t, 6, id=None), "id is not a positive integer: None"),
        "no id b": (hostile(t, 7, id=None), "id is not a positive integer: None"),
        "bad date": (hostile(t, 8, release_date="2024-01-15x"), "release_date is missing or malformed"),
        "NaN": (hostile(t, 9, vote_average=float("nan")), "vote_average is not a finite number"),
        "1e309": (hostile(t, 10, vote_average=float("inf")), "vote_average is not a finite number"),
        "genres": (hostile(t, 11, genres="Drama", genre_ids=None), "genres is not a list"),
    }
    for name, (movie, _) in cases.items():
        movie.details["title"] = movie.list_item["title"] = movie.details.get("title", "") + f" [{name}]"
    digits = hostile(t, 12)
    digits.list_item["id"] = digits.details["id"] = str(FIRST_ID + 12)  # a string of digits: a valid id
    drip = hostile(t, 13)
    drip.list_item["title"] = drip.details["title"] = "Hostile 13 [drip]"
    served = movies + [m for m, _ in cases.values()] + [digits, drip]
    return served, {name: reason for name, (_, reason) in cases.items()}


def test_every_hostile_record_is_a_reject_with_its_reason_and_the_rest_of_the_month_lands(database, object_store):
    valid = movies_for_month(MONTH)
    served, reasons = hostile_month(valid)
    drip_every_s = 60.0 / len(json.dumps(served[-1].details))
    faults = Faults(drip_ids=frozenset({DRIP_ID}), drip_every_s=drip_every_s)
    with TmdbTestServer(FakeTmdb(served, faults=faults)) as server:
        client = TmdbApiClient(
            base_url=server.base_url,
            api_key="test-key",
            requests_per_second=500,
            request_deadline_s=DEADLINE_S,
            max_retries=2,
            backoff_base_s=0.05,
        )
        started = time.monotonic()
        result = dg.materialize(
            with_storage_checks(movies_raw),
            resources=platform_resources(database, object_store, client),
            partition_key=MONTH.isoformat(),
            raise_on_error=False,
        )
        elapsed = time.monotonic() - started
    assert result.success, "one bad record must never fail the month"
    # Three attempts past a 1 s deadline cost about 3 s; waiting for the drip would cost 60.
    assert elapsed < 25, f"the month took {elapsed:.1f} s: a response that never finishes held the run"
    metadata = result.asset_materializations_for_node("movies_raw")[0].metadata
    assert metadata["unreadable"].value == 1 and metadata["timed_out"].value == 3
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]

    with database.connect() as conn:
        stored = {r[0] for r in conn.execute(f"select movie_id from {database.db_schema}.movies_raw")}
        rejects = conn.execute(f"select payload->>'title', reason from {database.db_schema}.movies_rejected").fetchall()
    window = (MONTH, dt.date(2024, 2, 1))
    own = validate_month([(m.list_item, m.details) for m in valid], window, dt.datetime.now(dt.timezone.utc))
    # The sample's own rejects stay out; the dripping movie lands from its list item.
    expected_ids = {row["movie_id"] for row in own.rows} | {FIRST_ID + 12, DRIP_ID}
    assert stored == expected_ids
    assert not stored & {FIRST_ID + n for n in range(1, 12)}
    by_case = {}
    for title, reason in rejects:
        for name in reasons:
            if title and title.endswith(f"[{name}]"):
                by_case[name] = reason
    for name, reason in reasons.items():
        assert reason in by_case.get(name, ""), (name, by_case.get(name))
