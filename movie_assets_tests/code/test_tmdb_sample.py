"""The sample catalogue is deterministic, TMDB-shaped, and keeps the API's quirks."""

import datetime as dt

from movie_assets.domain import clock
from movie_assets.domain.change_sync import plan_changes
from movie_assets.domain.movie_records import validate_month
from movie_assets.partitions import add_months
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


def crawled(source: TmdbSampleSource, window, day: dt.date) -> dict[int, dict]:
    """The details documents a crawl of `window` returns on `day`, by id (a page's repeats collapse)."""
    with clock.clock_at(dt.datetime.combine(day, dt.time(12), dt.timezone.utc)):
        return {details["id"]: details for _, details in source.crawl(window, log=lambda _: None).pairs}


def test_a_recrawl_after_a_sync_returns_the_synced_values():
    """Crawl a month, sync the feed's changes since (details of the listed ids), crawl again: nothing goes back."""
    source = TmdbSampleSource()
    month = sample_months()[3]
    window = (month, add_months(month, 1))
    crawl_day, sync_day = dt.date(2025, 3, 1), dt.date(2025, 3, 20)
    stored = crawled(source, window, crawl_day)
    with clock.clock_at(dt.datetime.combine(sync_day, dt.time(12), dt.timezone.utc)):
        listed = source.changed_ids(crawl_day, sync_day, log=lambda _: None).ids  # from the cursor day, as the sync
        synced = source.movie_details([i for i in listed if i in stored], log=lambda _: None).documents
    assert synced and all(isinstance(d, dict) for d in synced.values())
    stored.update(synced)  # type: ignore[arg-type]  # all documents, checked above
    assert crawled(source, window, sync_day) == stored
    # As the sync compares rows: the re-crawl's rows leave nothing for the synced documents to change.
    with clock.clock_at(dt.datetime.combine(sync_day, dt.time(13), dt.timezone.utc)):
        pairs = source.crawl(window, log=lambda _: None).pairs
    rows = validate_month(pairs, window, clock.now()).rows
    plan = plan_changes({r["movie_id"]: r for r in rows}, synced, window, clock.now())
    assert plan.rows == [] and plan.unchanged + len(plan.rejects) == len(synced) and plan.unchanged > 0


def test_the_sample_never_goes_back_and_changes_only_what_its_feed_lists():
    """For t1 < t2, a movie's document at t2 is the one at t1 unless the feed lists it for (t1, t2]; votes only grow."""
    source = TmdbSampleSource()
    month = sample_months()[10]
    window = (month, add_months(month, 1))
    days = [dt.date(2024, 12, 1), dt.date(2025, 1, 1), dt.date(2025, 1, 9), dt.date(2025, 6, 30), dt.date(2026, 2, 3)]
    for t1, t2 in zip(days, days[1:], strict=False):
        before, after = crawled(source, window, t1), crawled(source, window, t2)
        with clock.clock_at(dt.datetime.combine(t2, dt.time(12), dt.timezone.utc)):
            listed = set(source.changed_ids(t1 + dt.timedelta(days=1), t2, log=lambda _: None).ids)
            details = source.movie_details(sorted(after), log=lambda _: None).documents
        assert details == after, f"crawl and details disagree on {t2}"
        moved = {i for i in after if after[i] != before[i]}
        assert moved == listed & set(after) and (moved or t2 < dt.date(2025, 1, 9)), (t1, t2)
        assert all(after[i]["vote_count"] >= before[i]["vote_count"] for i in after), (t1, t2)


def test_the_feed_lists_no_day_to_come():
    """TMDB cannot list tomorrow's changes: the feed stops at the clock's today, as the details do."""
    source = TmdbSampleSource()
    today = dt.date(2025, 5, 10)
    with clock.clock_at(dt.datetime.combine(today, dt.time(12), dt.timezone.utc)):
        ahead = source.changed_ids(today - dt.timedelta(days=3), today + dt.timedelta(days=30), log=lambda _: None)
        until_today = source.changed_ids(today - dt.timedelta(days=3), today, log=lambda _: None)
        assert ahead.ids == until_today.ids and until_today.ids
        assert source.changed_ids(today + dt.timedelta(days=1), today + dt.timedelta(days=9)).ids == []


def test_a_crawl_keeps_the_list_quirks_after_the_votes_moved():
    """A count the list item sends as a string stays a string when the feed has moved it."""
    month = sample_months()[5]
    with clock.clock_at(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
        pairs = TmdbSampleSource().crawl((month, add_months(month, 1)), log=lambda _: None).pairs
    quirky = [(item, details) for item, details in pairs if isinstance(item["vote_count"], str)]
    assert quirky and all(int(item["vote_count"]) == details["vote_count"] for item, details in quirky)
