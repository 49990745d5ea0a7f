"""The sample catalogue is deterministic, TMDB-shaped, and keeps the API's quirks."""

import datetime as dt

from movie_assets.domain.movie_records import validate_month
from movie_assets.resources.tmdb_sample import TmdbSampleSource, movies_for_month, sample_months


def test_deterministic():
    month = dt.date(2024, 3, 1)
    assert [m.details for m in movies_for_month(month)] == [m.details for m in movies_for_month(month)]


def test_covers_two_years_with_a_few_thousand_movies():
    months = sample_months()
    assert len(months) >= 24 and months[-1] >= dt.date(2024, 12, 1)
    total = sum(len(movies_for_month(m)) for m in months)
    assert 2_500 <= total <= 5_000


def test_has_the_api_quirks_and_mostly_valid_records():
    movies = [m for month in sample_months() for m in movies_for_month(month)]
    items = [m.list_item for m in movies]
    assert sum(i["release_date"] == "" for i in items) > 20
    assert sum(i["title"] is None for i in items) > 20
    assert sum(isinstance(i["vote_count"], str) for i in items) > 20
    month = sample_months()[5]
    window = (month, (month + dt.timedelta(days=32)).replace(day=1))
    pairs = [(m.list_item, m.details) for m in movies_for_month(month)]
    result = validate_month(pairs, window, dt.datetime.now(dt.timezone.utc))
    assert len(result.rejects) >= 1 and len(result.rows) > 10 * len(result.rejects)


def test_outside_the_sample_months_there_are_no_movies():
    assert movies_for_month(dt.date(2019, 1, 1)) == []


def test_count_listed_counts_what_a_crawl_lists_whole_months_or_not():
    """The range estimate counts whole months from their first draw; it must agree with the movies themselves."""
    source = TmdbSampleSource()
    months = sample_months()
    windows = [
        (months[0], months[3]),  # whole months
        (months[1] + dt.timedelta(days=9), months[2] + dt.timedelta(days=17)),  # cut at both ends
        (months[-1], months[-1] + dt.timedelta(days=40)),  # past the sample's end
    ]
    for window in windows:
        listed = {m.details["id"] for m in source._released_in(window)}
        assert source.count_listed(window) == len(listed) > 0, window
