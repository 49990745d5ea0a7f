"""The change sync's rules, one by one: change, move, arrive, leave, reject, and TMDB's 14-day windows."""

import datetime as dt

import pytest

from movie_assets.domain.change_sync import plan_changes
from movie_assets.domain.movie_records import UnreadableDocument
from movie_assets.resources.tmdb import change_windows

RANGE = (dt.date(1990, 1, 1), dt.date(2027, 1, 1))
NOW = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.timezone.utc)
MARCH, APRIL = dt.date(2024, 3, 1), dt.date(2024, 4, 1)


def doc(movie_id: int, release: str, **extra) -> dict:
    return {
        "id": movie_id,
        "title": f"Movie {movie_id}",
        "release_date": release,
        "vote_count": 10,
        "vote_average": 6.5,
        **extra,
    }


def test_a_changed_movie_replaces_its_row_in_its_month():
    stored = {1: {"release_month": MARCH, "vote_average": 6.5}}
    plan = plan_changes(stored, {1: doc(1, "2024-03-09", vote_count=99)}, RANGE, NOW)
    assert plan.delete_ids == [1] and [r["vote_count"] for r in plan.rows] == [99]
    assert plan.rows[0]["fetched_at"] == NOW
    assert dict(plan.months) == {MARCH: {"changed": 1}}, "more votes, the same average: the label stays"


def test_a_new_average_new_movie_or_removal_counts_as_a_changed_label():
    stored = {1: {"release_month": MARCH, "vote_average": 6.5}, 2: {"release_month": MARCH, "vote_average": 7.0}}
    plan = plan_changes(
        stored, {1: doc(1, "2024-03-09", vote_average=7.1), 2: None, 3: doc(3, "2024-03-03")}, RANGE, NOW
    )
    assert dict(plan.months) == {MARCH: {"changed": 1, "removed": 1, "new": 1, "labels_changed": 3}}
    assert plan.totals()["labels_changed"] == 3


def test_a_moved_release_date_leaves_the_old_month_and_enters_the_new_one():
    plan = plan_changes({1: {"release_month": MARCH, "vote_average": 6.5}}, {1: doc(1, "2024-04-02")}, RANGE, NOW)
    assert plan.delete_ids == [1] and plan.rows[0]["release_month"] == APRIL
    assert dict(plan.months) == {MARCH: {"moved_out": 1}, APRIL: {"moved_in": 1}}
    assert plan.moved_ids == [1]


def test_a_new_movie_inside_the_range_joins_its_month_and_one_outside_is_counted_and_skipped():
    plan = plan_changes({}, {5: doc(5, "2024-03-20"), 6: doc(6, "1950-05-05")}, RANGE, NOW)
    assert [r["movie_id"] for r in plan.rows] == [5] and plan.delete_ids == []
    assert dict(plan.months) == {MARCH: {"new": 1, "labels_changed": 1}} and plan.outside_range == 1


def test_a_404_removes_a_stored_movie_with_its_reason_and_ignores_an_unknown_one():
    plan = plan_changes({1: {"release_month": MARCH}}, {1: None, 2: None}, RANGE, NOW)
    assert plan.delete_ids == [1] and plan.rows == []
    assert plan.removed == [
        {"movie_id": 1, "release_month": MARCH, "reason": "TMDB answers 404: the movie was deleted", "removed_at": NOW}
    ]
    assert plan.unknown_deleted == 1 and dict(plan.months) == {MARCH: {"removed": 1, "labels_changed": 1}}


def test_a_stored_movie_moved_outside_the_partitions_leaves_them():
    plan = plan_changes({1: {"release_month": MARCH}}, {1: doc(1, "1950-01-01")}, RANGE, NOW)
    assert plan.delete_ids == [1] and plan.removed[0]["reason"].startswith("release date moved to 1950-01-01")


def test_an_invalid_document_is_a_reject_and_the_stored_row_stays():
    plan = plan_changes({1: {"release_month": MARCH}}, {1: doc(1, "2024-03-09", vote_average=11.5)}, RANGE, NOW)
    assert plan.delete_ids == [] and plan.rows == []
    assert plan.rejects[0]["release_month"] == MARCH and "vote_average" in plan.rejects[0]["reason"]
    assert plan.totals()["rejected"] == 1
    unknown = plan_changes({}, {7: doc(7, "2024-04-03", vote_average=11.5), 8: doc(8, "not a date")}, RANGE, NOW)
    assert [r["release_month"] for r in unknown.rejects] == [APRIL, None]


# What TMDB may answer for stored movie 1's details, and the reason its one reject must give. One line per case.
HOSTILE_DETAILS = {
    "another movie's document": (doc(2, "2024-03-09"), "carry id 2: another movie's document"),
    "no id": (doc(None, "2024-03-09"), "carry id None"),
    "adult as text": (doc(1, "2024-03-09", adult="false"), "adult is not a boolean: 'false'"),
    "language as a number": (doc(1, "2024-03-09", original_language=7), "original_language is not text"),
    "imdb id as an object": (doc(1, "2024-03-09", imdb_id={"id": 1}), "imdb_id is not text"),
    "status as a number": (doc(1, "2024-03-09", status=3), "status is not text"),
    "title as a number": (doc(1, "2024-03-09", title=7), "title is not text"),
    "genre id 3e9": (doc(1, "2024-03-09", genres=[{"id": 3_000_000_000, "name": "Drama"}]), "genre ids are not"),
    "genre name as a number": (doc(1, "2024-03-09", genres=[{"id": 18, "name": 18}]), "genre names are not text"),
    "NaN where nothing reads": (doc(1, "2024-03-09", tagline=float("nan")), "contains NaN or Infinity"),
    "NUL in a key": (doc(1, "2024-03-09", **{"bad\x00key": 1}), "a key in the document contains a NUL byte"),
    "never arrived whole": (UnreadableDocument("TMDB answered /movie/1 with a body that is not JSON"), "not JSON"),
}


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_DETAILS["nested 3,000 deep"] = (doc(1, "2024-03-09", deep=nested(3000)), "malformed record: RecursionError")


@pytest.mark.parametrize("case", HOSTILE_DETAILS)
def test_a_hostile_details_document_is_one_reject_and_the_stored_movie_stays(case):
    """Never a deletion, never a second copy, never a failed sync: one reject with its reason, the row untouched."""
    document, reason = HOSTILE_DETAILS[case]
    stored = {1: {"release_month": MARCH, "vote_average": 6.5}, 2: {"release_month": MARCH, "vote_average": 6.5}}
    plan = plan_changes(stored, {1: document}, RANGE, NOW)
    assert (plan.rows, plan.delete_ids, plan.removed) == ([], [], []), case
    assert [r["movie_id"] for r in plan.rejects] == [1], case
    assert reason in plan.rejects[0]["reason"] and plan.rejects[0]["release_month"] == MARCH, plan.rejects


def test_change_windows_are_at_most_14_days_and_cover_every_day_once():
    pieces = change_windows(dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    assert pieces == [
        (dt.date(2024, 1, 1), dt.date(2024, 1, 14)),
        (dt.date(2024, 1, 15), dt.date(2024, 1, 28)),
        (dt.date(2024, 1, 29), dt.date(2024, 1, 31)),
    ]
    assert change_windows(dt.date(2024, 1, 5), dt.date(2024, 1, 5)) == [(dt.date(2024, 1, 5), dt.date(2024, 1, 5))]


def test_the_sample_feed_is_deterministic_and_its_details_carry_the_change():
    from movie_assets.domain import clock
    from movie_assets.resources.tmdb_sample import TmdbSampleSource, movie_by_id

    day = dt.date(2026, 12, 1)
    source = TmdbSampleSource()
    with clock.clock_at(dt.datetime.combine(day, dt.time(12), dt.timezone.utc)):  # the feed stops at today
        ids = source.changed_ids(day, day).ids
        assert ids == source.changed_ids(day, day).ids and 50 < len(ids) < 400
        now = source.movie_details(ids[:1]).documents[ids[0]]
    before = movie_by_id(ids[0])
    assert before is not None
    assert now is not None and now["vote_count"] > before.details["vote_count"]
    assert source.movie_details([999]).documents == {999: None}


def test_a_document_that_changes_no_typed_column_touches_nothing():
    from movie_assets.domain.change_sync import COMPARED_COLUMNS
    from movie_assets.domain.movie_records import validate

    document = doc(1, "2024-03-09")
    row, _ = validate(document, RANGE)
    assert row is not None
    stored = {1: {c: row[c] for c in COMPARED_COLUMNS}}
    plan = plan_changes(stored, {1: {**document, "poster_path": "/new.jpg"}}, RANGE, NOW)
    assert plan.rows == [] and plan.delete_ids == [] and dict(plan.months) == {} and plan.unchanged == 1
    assert plan.fetched_ids == [1]


def test_adult_titles_and_videos_stay_out_as_the_crawl_keeps_them_out():
    plan = plan_changes(
        {1: {"release_month": MARCH}},
        {1: doc(1, "2024-03-09", adult=True), 2: doc(2, "2024-03-09", video=True)},
        RANGE,
        NOW,
    )
    assert (
        plan.delete_ids == [1] and "adult" in plan.removed[0]["reason"] and plan.out_of_scope == 1 and plan.rows == []
    )
