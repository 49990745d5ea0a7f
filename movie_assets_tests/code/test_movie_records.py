"""Merging and validating TMDB documents: repairs what the details fix, rejects the rest with a reason."""

import datetime as dt

from movie_assets.domain.movie_records import RAW_COLUMNS, merge, to_frame, validate, validate_month

JAN = (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
NOW = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)


def details(**overrides):
    doc = {
        "id": 7,
        "title": "Heat",
        "release_date": "2024-01-15",
        "vote_average": 7.5,
        "vote_count": 100,
        "budget": 0,
        "revenue": 0,
        "runtime": 120,
        "genres": [{"id": 80, "name": "Crime"}],
        "original_language": "en",
    }
    return {**doc, **overrides}


def test_details_repair_list_item_defects():
    item = {"id": 7, "title": None, "release_date": "", "vote_count": "100", "genre_ids": [80]}
    row, reason = validate(merge(item, details()), JAN)
    assert reason is None
    assert row["title"] == "Heat" and row["release_date"] == dt.date(2024, 1, 15)
    assert row["vote_count"] == 100 and row["genre_ids"] == [80] and row["genres"] == ["Crime"]


def test_number_sent_as_string_is_parsed_when_details_are_missing():
    row, reason = validate(merge({**details(), "vote_count": "42"}, None), JAN)
    assert reason is None and row["vote_count"] == 42


def test_list_item_fills_what_details_lack():
    row, _ = validate(merge({"id": 7, "popularity": 3.5}, {k: v for k, v in details().items()}), JAN)
    assert row["popularity"] == 3.5


def test_rejects_carry_a_reason():
    cases = {
        "title is missing": details(title=""),
        "vote_average 11.0 is outside 0..10": details(vote_average=11.0),
        "runtime is negative": details(runtime=-5),
        "release_date is missing": details(release_date=""),
        "outside the requested window": details(release_date="2024-02-02"),
        "vote_count is not a number": details(vote_count="many"),
        "id is not a positive integer: None": details(id=None),
        "id is not a positive integer: 1007.9": details(id=1007.9),
        "id is not a positive integer: -1006": details(id=-1006),
        "id is not a positive integer: '12a'": details(id="12a"),
        "id is not a positive integer: True": details(id=True),
    }
    for expected, doc in cases.items():
        row, reason = validate(doc, JAN)
        assert row is None and expected in reason, (expected, reason)


def test_validate_month_dedupes_and_files_rejects_under_the_crawled_month():
    pairs = [({"id": 1}, details(id=1)), ({"id": 1}, details(id=1)), ({"id": 2}, details(id=2, title=""))]
    month = validate_month(pairs, JAN, NOW)
    assert [r["movie_id"] for r in month.rows] == [1]
    assert len(month.rejects) == 1 and month.rejects[0]["release_month"] == dt.date(2024, 1, 1)
    assert month.rejects[0]["payload"]["id"] == 2


def test_to_frame_has_the_table_columns_in_order():
    month = validate_month([({"id": 1}, details(id=1))], JAN, NOW)
    frame = to_frame(month.rows, RAW_COLUMNS)
    assert list(frame.columns) == list(RAW_COLUMNS)
    assert str(frame["vote_count"].dtype) == "Int64"


def test_malformed_records_become_rejects_not_crashes():
    cases = {
        "budget is not a finite number": details(budget=float("inf")),
        "budget is out of range": details(budget=2**70),
        "genres is not a list of {id, name}": details(genres=[{"name": "no id"}]),
        "genres is not a list": details(genres="Drama"),
        "title is not text": details(title=123),
        "release_date is missing or malformed": details(release_date=20240115),
    }
    for expected, doc in cases.items():
        row, reason = validate({k: v for k, v in doc.items() if k != "genre_ids"}, JAN)
        assert row is None and expected in reason, (expected, reason)
    row, reason = validate({**details(), "genre_ids": ["a"]}, JAN)
    assert row is None and "genre ids are not integers" in reason, reason


def test_ids_are_normalized_before_deduplication_and_id_less_items_each_become_a_reject():
    from movie_assets.domain.movie_records import validate_month

    now = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
    month = validate_month(
        [
            (details(id=1015), None),
            (details(id="1015"), None),  # the same movie sent as a string: stored once
            (details(id=None, title="A"), None),
            (details(id=None, title="B"), None),  # two items without an id: two rejects, none lost
        ],
        JAN,
        now,
    )
    assert [r["movie_id"] for r in month.rows] == [1015]
    assert [r["payload"]["title"] for r in month.rejects] == ["A", "B"]


def test_the_cli_refuses_a_movie_id_that_is_no_tmdb_id_with_a_message_not_a_traceback(capsys):
    import pytest

    from movie_platform.cli import build_parser

    for bad in ("99999999999999999999", "-5", "7.5", "abc"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["features", bad])
        assert exited.value.code == 2 and "is not a TMDB movie id" in capsys.readouterr().err
    assert build_parser().parse_args(["predict", "550", "603"]).movie_ids == [550, 603]


def test_an_id_of_thousands_of_digits_is_no_id_not_a_crash():
    """int() refuses strings over 4,300 digits: a 5,000-digit id used to raise out of validation."""
    from movie_assets.domain.movie_records import movie_id_of

    assert movie_id_of("9" * 5000) is None and movie_id_of("0" * 30 + "42") == 42
    assert movie_id_of(str(2**63 - 1)) == 2**63 - 1 and movie_id_of(str(2**63)) is None
    row, reason = validate({**details(), "id": "7" * 5000}, JAN)
    assert row is None and "id is not a positive integer" in reason
