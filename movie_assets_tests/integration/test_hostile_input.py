"""One crawled month in which every hostile record TMDB could send occurs: the rest of the month lands.

Each hostile movie becomes a reject with its reason (or, for an id sent as a string of
digits, a normal movie); none fails the month's COPY, and the run needs no retry. The
same month also has the hostile responses a month survives:
- a details response that never finishes (a slow drip) and one whose JSON is cut in the
  middle on every attempt: each is read again, then counted unreadable, and the movie
  lands from its list item;
- a 404 on details for a listed id: the list item stands in (counted in details_missing);
- details answered 200 with the body `null` or a JSON list: read again, then counted unreadable, and
  the list item stands in (never read as the 404 that deletes a movie);
- details that carry another movie's document: a reject naming both ids (the other movie is not
  stored twice);
- details whose release_date is in another month than the listing's: a reject;
- a discover page whose `results` is null, and `total_pages` of 100000: the client pages
  to TMDB's 500-page cap once, no further;
- a 429 whose Retry-After is `tomorrow`: the client backs off on its own schedule, then
  gets the document.
The run ends inside its deadlines. Responses that must fail the month by design live in
test_tmdb_client.py: a Retry-After of 3600 s (past the 60 s cap) and more unreadable
details than `max_missing_details`.
"""

import copy
import datetime as dt
import json
import time

import dagster as dg

from movie_assets.assets.ingest import movies_raw, movies_raw_backup
from movie_assets.domain.movie_records import validate_month
from movie_assets.object_layout import RAW_BACKUP_PATH
from movie_assets.resources.tmdb import MAX_PAGES, TmdbApiClient
from movie_assets.resources.tmdb_sample import SampleMovie, movies_for_month
from movie_assets_tests.conftest import platform_resources, with_storage_checks
from movie_assets_tests.tmdb_server import FakeTmdb, Faults, TmdbTestServer

MONTH = dt.date(2024, 1, 1)
FIRST_ID = 990_000_001
DRIP_ID = FIRST_ID + 13  # its details body drips one byte at a time, 60 s in all: longer than the deadline
OTHER_MONTH_ID = FIRST_ID + 14  # listed in January, its details say 2024-03-10
NOT_FOUND_ID = FIRST_ID + 15  # listed, its details answer 404
TRUNCATED_ID = FIRST_ID + 16  # its details JSON is cut in the middle on every attempt
THROTTLED_ID = FIRST_ID + 17  # its details are first answered 429 with Retry-After: tomorrow
SWAPPED_ID = FIRST_ID + 25  # its details answer with the document of the month's first movie
NULL_BODY_ID = FIRST_ID + 26  # its details answer 200 with the body `null`
LIST_BODY_ID = FIRST_ID + 27  # its details answer 200 with a JSON list
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
        "other month": (hostile(t, 14), "release_date 2024-03-10 is outside the requested window"),
        "adult as text": (hostile(t, 18, adult="false"), "adult is not a boolean: 'false'"),
        "language as a number": (hostile(t, 19, original_language=7), "original_language is not text"),
        "imdb id as an object": (hostile(t, 20, imdb_id={"id": 1}), "imdb_id is not text"),
        "status as a number": (hostile(t, 21, status=3), "status is not text"),
        "genre id 3e9": (
            hostile(t, 22, genres=[{"id": 3_000_000_000, "name": "Drama"}], genre_ids=[3_000_000_000]),
            "genre ids are not integers",
        ),
        "NaN where nothing reads": (hostile(t, 23, tagline=float("nan")), "contains NaN or Infinity"),
        "NUL in a key": (hostile(t, 24, **{"bad\u0000key": 1}), "a key in the document contains a NUL byte"),
        "another movie's document": (hostile(t, 25), f"carry id {t.details['id']}: another movie's document"),
    }
    for name, (movie, _) in cases.items():
        movie.details["title"] = movie.list_item["title"] = movie.details.get("title", "") + f" [{name}]"
    digits = hostile(t, 12)
    digits.list_item["id"] = digits.details["id"] = str(FIRST_ID + 12)  # a string of digits: a valid id
    drip = hostile(t, 13)
    drip.list_item["title"] = drip.details["title"] = "Hostile 13 [drip]"
    # Valid documents behind hostile responses (see `hostile_faults`).
    responses = [hostile(t, n) for n in (15, 16, 17, NULL_BODY_ID - FIRST_ID, LIST_BODY_ID - FIRST_ID)]
    served = movies + [m for m, _ in cases.values()] + [digits, drip] + responses
    return served, {name: reason for name, (_, reason) in cases.items()}


def hostile_faults(served: list[SampleMovie]) -> Faults:
    """The month's hostile responses, and a listing past its last page that is null and claims 100000 pages."""
    drip = next(m for m in served if m.details.get("id") == DRIP_ID)
    first = served[0]
    return Faults(
        drip_ids=frozenset({DRIP_ID}),
        drip_every_s=60.0 / len(json.dumps(drip.details)),
        details_overrides={OTHER_MONTH_ID: {"release_date": "2024-03-10"}},
        not_found_ids=frozenset({NOT_FOUND_ID}),
        truncated_ids=frozenset({TRUNCATED_ID}),
        null_results_pages=frozenset({-(-len(served) // 20) + 1}),  # the first page past the listing
        reported_total_pages=100_000,
        throttle_ids=frozenset({THROTTLED_ID}),
        retry_after_text="tomorrow",
        details_bodies={SWAPPED_ID: first.details, NULL_BODY_ID: None, LIST_BODY_ID: [first.details]},
    )


def test_every_hostile_record_is_a_reject_with_its_reason_and_the_rest_of_the_month_lands(database, object_store):
    valid = movies_for_month(MONTH)
    served, reasons = hostile_month(valid)
    fake = FakeTmdb(served, faults=hostile_faults(served))
    with TmdbTestServer(fake) as server:
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
    metadata = {
        name: value.value for name, value in result.asset_materializations_for_node("movies_raw")[0].metadata.items()
    }
    # The drip, the cut JSON and the `null` and list bodies: three attempts each, then unreadable; with the 404,
    # five documents missing. A `null` body is never the 404 that means "deleted".
    assert (metadata["unreadable"], metadata["timed_out"], metadata["details_missing"]) == (4, 3, 5), metadata
    assert metadata["throttled"] == 1, "one 429 with Retry-After: tomorrow, then the document"
    assert fake.requests["truncated"] == 3 and fake.requests["429"] == 1, fake.requests
    assert fake.requests["details body"] == 1 + 3 + 3, "the swapped document once; null and list bodies 3 times"
    # 100000 pages claimed, a null page past the listing: one pass to the 500-page cap, nothing listed missing.
    assert fake.requests["discover"] == metadata["pages"] == MAX_PAGES, (fake.requests, metadata)
    assert metadata["missing_listings"] == 0, metadata
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]

    schema = database.db_schema
    with database.connect() as conn:
        stored = dict(conn.execute(f"select movie_id, payload ? 'runtime' from {schema}.movies_raw").fetchall())
        rejects = conn.execute(f"select payload->>'title', reason from {schema}.movies_rejected").fetchall()
    window = (MONTH, dt.date(2024, 2, 1))
    own = validate_month([(m.list_item, m.details) for m in valid], window, dt.datetime.now(dt.timezone.utc))
    # The sample's own rejects stay out. Movies whose details never came land from their list item
    # (which has no runtime); the throttled one lands with its details.
    from_list_item = {DRIP_ID, NOT_FOUND_ID, TRUNCATED_ID, NULL_BODY_ID, LIST_BODY_ID}
    expected_ids = {row["movie_id"] for row in own.rows} | {FIRST_ID + 12, THROTTLED_ID} | from_list_item
    assert set(stored) == expected_ids
    assert not set(stored) & {FIRST_ID + n for n in (*range(1, 12), 14, *range(18, 26))}
    assert not [i for i in from_list_item if stored[i]], "these movies' details never came"
    assert stored[THROTTLED_ID], "the throttled movie must land with its details"
    by_case: dict[str, list[str]] = {}
    for title, reason in rejects:
        for name in reasons:
            if title and title.endswith(f"[{name}]"):
                by_case.setdefault(name, []).append(reason)
    for name, reason in reasons.items():
        assert len(by_case.get(name, [])) == 1, f"{name}: one reject expected, got {by_case.get(name)}"
        assert reason in by_case[name][0], (name, by_case[name])


def test_a_crawl_may_not_shrink_a_stored_month_on_its_own(database, object_store):
    """After a good crawl, TMDB answers every listing page with `results: null` (its counts still true).

    The run fails naming the numbers and the way out, and the month keeps its movies and its raw
    backup; with `allow_shrink: true` the same crawl stores what it found, and the larger backup is
    kept beside the new one.
    """
    movies = movies_for_month(MONTH)
    assets = [movies_raw, movies_raw_backup]
    resources = {}

    def crawl(fake: FakeTmdb, config: dict | None = None):
        with TmdbTestServer(fake) as server:
            client = TmdbApiClient(base_url=server.base_url, api_key="test-key", requests_per_second=500)
            resources.update(platform_resources(database, object_store, client))
            run_config = {"ops": {"movies_raw": {"config": config}}} if config else None
            return dg.materialize(
                assets,
                resources=resources,
                partition_key=MONTH.isoformat(),
                run_config=run_config,
                raise_on_error=False,
            )

    def stored() -> int:
        return database.count_rows_in("movies_raw", "release_month", (MONTH, dt.date(2024, 2, 1)))

    assert crawl(FakeTmdb(movies)).success
    kept, backup = stored(), object_store.read(RAW_BACKUP_PATH, MONTH.isoformat())
    assert kept > 100

    empty_listing = Faults(null_results_pages=frozenset(range(1, 501)))
    result = crawl(FakeTmdb(movies, faults=empty_listing))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "keeps 0 movies" in message and f"movies_raw stores {kept}" in message and "allow_shrink" in message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert stored() == kept, "the month lost its movies"
    assert object_store.read(RAW_BACKUP_PATH, MONTH.isoformat()) == backup, "the backup was replaced"

    assert crawl(FakeTmdb(movies, faults=empty_listing), {"allow_shrink": True}).success
    assert stored() == 0
    # The empty backup that replaced the month's kept the larger one beside it.
    folder = object_store.path_for(RAW_BACKUP_PATH, MONTH.isoformat()).parent
    (aside,) = [p for p in folder.iterdir() if p.name.startswith("movies.replaced-")]
    assert aside.read_bytes() == backup
