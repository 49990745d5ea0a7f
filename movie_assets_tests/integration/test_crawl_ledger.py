"""When a crawl resumes: only an unfinished, recent crawl of the same range, and only what was stored since it began.

The end-to-end case (a SIGKILLed CLI backfill run again) is test_backfill_resume.py; these are the rules.
"""

import datetime as dt

import pandas as pd

from movie_assets.resources import crawl_ledger

JAN, FEB, MAR, APR = (dt.date(2024, m, 1) for m in (1, 2, 3, 4))
RANGE = (JAN, APR)  # January to March
T0 = dt.datetime(2026, 12, 7, 8, tzinfo=dt.timezone.utc)


def store(database, month: dt.date, run_id: str, at: dt.datetime) -> None:
    """A month stored by a crawl (its ledger row; the movies themselves do not matter here)."""
    row = crawl_ledger.month_row(month, run_id, at, movies=10, rejected=0, requests=11)
    database.replace_tables([row], "release_month", (month, (pd.Timestamp(month) + pd.offsets.MonthBegin()).date()))


def test_an_unfinished_crawl_of_the_same_range_is_resumed_from_where_its_chain_began(database):
    first = crawl_ledger.start(database, "run-1", RANGE, T0)
    assert first.resumed_run is None and first.done == frozenset()
    store(database, JAN, "run-1", T0 + dt.timedelta(minutes=1))  # then run-1 is killed
    second = crawl_ledger.start(database, "run-2", RANGE, T0 + dt.timedelta(hours=1))
    assert second.resumed_run == "run-1" and second.done == {JAN}
    store(database, FEB, "run-2", T0 + dt.timedelta(hours=1, minutes=1))  # killed too
    third = crawl_ledger.start(database, "run-3", RANGE, T0 + dt.timedelta(hours=2))
    assert third.resumed_run == "run-2" and third.done == {JAN, FEB}, "months of the whole chain count"
    store(database, MAR, "run-3", T0 + dt.timedelta(hours=2, minutes=1))
    crawl_ledger.finish(database, "run-3", RANGE, T0 + dt.timedelta(hours=2, minutes=2))
    again = crawl_ledger.start(database, "run-4", RANGE, T0 + dt.timedelta(hours=3))
    assert again.resumed_run is None and again.done == frozenset(), "a finished crawl is never resumed"


def test_another_range_an_old_attempt_or_resume_false_crawl_in_full(database):
    crawl_ledger.start(database, "run-1", RANGE, T0)
    store(database, JAN, "run-1", T0 + dt.timedelta(minutes=1))
    other = crawl_ledger.start(database, "run-2", (JAN, MAR), T0 + dt.timedelta(hours=1))
    assert other.resumed_run is None, "another range is another command"
    full = crawl_ledger.start(database, "run-3", RANGE, T0 + dt.timedelta(hours=1), resume=False)
    assert full.resumed_run is None and full.done == frozenset()
    # run-3 was killed too; a week and a day later its range is crawled in full
    later = crawl_ledger.start(database, "run-4", RANGE, T0 + dt.timedelta(days=8), max_age=dt.timedelta(days=7))
    assert later.resumed_run is None and later.done == frozenset()
    # the newest unfinished attempt of the range is run-4's (resume: false closed run-1's): run-5 resumes it
    soon = crawl_ledger.start(database, "run-5", RANGE, T0 + dt.timedelta(days=8, hours=1))
    assert soon.resumed_run == "run-4"


def test_a_chain_of_daily_resumes_does_not_keep_a_month_older_than_the_resume_window(database):
    crawl_ledger.start(database, "day-0", RANGE, T0)
    store(database, JAN, "day-0", T0 + dt.timedelta(minutes=1))  # killed; every day's rerun is killed too
    for day in range(1, 8):
        resumed = crawl_ledger.start(database, f"day-{day}", RANGE, T0 + dt.timedelta(days=day))
        assert resumed.done == {JAN}
    week_later = crawl_ledger.start(database, "day-8", RANGE, T0 + dt.timedelta(days=8), max_age=dt.timedelta(days=7))
    assert week_later.resumed_run is None and week_later.done == frozenset(), "January is 8 days old: crawled again"


def test_a_step_retry_resumes_its_own_run_even_with_resume_false(database):
    crawl_ledger.start(database, "run-1", RANGE, T0, resume=False)
    store(database, JAN, "run-1", T0 + dt.timedelta(minutes=1))  # the step fails; Dagster retries it in run-1
    retry = crawl_ledger.start(database, "run-1", RANGE, T0 + dt.timedelta(minutes=2), resume=False)
    assert retry.resumed_run == "run-1" and retry.done == {JAN}
