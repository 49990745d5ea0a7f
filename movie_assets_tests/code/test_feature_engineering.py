"""Feature engineering: nothing from the target, nothing from after the event time, one-hots right."""

import datetime as dt

import pandas as pd
import pytest

from movie_assets.domain.feature_engineering import FEATURE_NAMES, GENRE_FEATURES, build_features

EVENT = dt.datetime(2024, 7, 1, 12, 0, tzinfo=dt.timezone.utc)


def clean_rows(**overrides) -> pd.DataFrame:
    row = {
        "movie_id": 7,
        "release_date": dt.date(2024, 6, 1),
        "release_month": dt.date(2024, 6, 1),
        "budget": 1_000_000,
        "revenue": None,
        "vote_count": 99,
        "runtime": 101,
        "popularity": 3.5,
        "overview_length": 40,
        "title_length": 4,
        "genre_ids": [18, 878],
        "original_language": "ko",
        "vote_average": 7.9,
    }
    return pd.DataFrame([{**row, **overrides}])


def test_no_feature_is_derived_from_the_target():
    assert not any("vote_average" in name for name in FEATURE_NAMES)
    high = build_features(clean_rows(vote_average=9.9), EVENT)
    low = build_features(clean_rows(vote_average=1.0), EVENT)
    pd.testing.assert_frame_equal(high, low)


def test_values_as_of_the_event_time():
    row = build_features(clean_rows(), EVENT).iloc[0]
    assert row["event_timestamp"] == pd.Timestamp(EVENT) and row["created"] == pd.Timestamp(EVENT)
    assert row["release_days"] == (dt.date(2024, 6, 1) - dt.date(1970, 1, 1)).days
    assert row["log_budget"] == pytest.approx(13.8155, abs=1e-3) and pd.isna(row["log_revenue"])
    assert row["release_year"] == 2024 and row["release_month_of_year"] == 6 and row["release_weekday"] == 5


def test_the_values_do_not_move_with_the_event_time():
    """Two years later the same movie has the same features: only then can an unchanged movie keep its event time."""
    now = build_features(clean_rows(), EVENT)
    later = build_features(clean_rows(), EVENT + dt.timedelta(days=730))
    pd.testing.assert_frame_equal(now[FEATURE_NAMES], later[FEATURE_NAMES])


def test_an_unchanged_movie_keeps_its_event_time_and_a_changed_one_supersedes_its_row():
    from movie_assets.domain.feature_engineering import carry_unchanged

    clean = pd.concat([clean_rows(), clean_rows(movie_id=8), clean_rows(movie_id=9)], ignore_index=True)
    stored = build_features(clean, EVENT)
    later = EVENT + dt.timedelta(days=30)
    changed = clean[clean["movie_id"] != 9].assign(runtime=[101, 120])  # 8 changed, 9 left the month, 10 is new
    fresh = build_features(pd.concat([changed, clean_rows(movie_id=10)], ignore_index=True), later)
    rows, superseded = carry_unchanged(fresh, stored)
    times = dict(zip(rows["movie_id"], rows["event_timestamp"], strict=True))
    assert times == {7: pd.Timestamp(EVENT), 8: pd.Timestamp(later), 10: pd.Timestamp(later)}
    assert rows.loc[rows["movie_id"] == 7, "created"].item() == pd.Timestamp(EVENT)
    assert sorted(superseded["movie_id"]) == [8, 9] and set(superseded["event_timestamp"]) == {pd.Timestamp(EVENT)}
    assert superseded.loc[superseded["movie_id"] == 8, "runtime"].item() == 101, "the old value is what is kept"
    again, none = carry_unchanged(build_features(clean, later), stored)
    assert set(again["event_timestamp"]) == {pd.Timestamp(EVENT)} and none.empty


def test_genre_one_hot_and_language_flags():
    row = build_features(clean_rows(), EVENT).iloc[0]
    assert row["genre_drama"] == 1 and row["genre_science_fiction"] == 1 and row["genre_horror"] == 0
    assert sum(row[name] for name in GENRE_FEATURES.values()) == 2
    assert row["lang_ko"] == 1 and row["lang_en"] == 0 and row["lang_other"] == 0
    other = build_features(clean_rows(original_language="sv"), EVENT).iloc[0]
    assert other["lang_other"] == 1


def test_every_declared_feature_is_built():
    frame = build_features(clean_rows(), EVENT)
    assert set(FEATURE_NAMES) <= set(frame.columns)
    assert "release_month" not in frame.columns, (
        "the partition folder carries release_month; a column would clash in Feast"
    )


def test_empty_partitions_give_empty_frames():
    from movie_assets.domain.cleaning import CLEAN_COLUMNS, clean_movies
    from movie_assets.domain.eda import EDA_COLUMNS, eda_stats_frame
    from movie_assets.domain.movie_records import RAW_COLUMNS, to_frame

    clean, dropped = clean_movies(to_frame([], RAW_COLUMNS))
    assert clean.empty and dropped.empty and list(clean.columns) == list(CLEAN_COLUMNS)
    assert list(eda_stats_frame(clean).columns) == list(EDA_COLUMNS) and eda_stats_frame(clean).empty
    features = build_features(clean, EVENT)
    assert features.empty and set(FEATURE_NAMES) <= set(features.columns)


def test_carried_times_keep_the_unit_of_freshly_built_ones():
    """Months with and without carried rows must share one Parquet schema: Feast's pull concatenates them."""
    from movie_assets.domain.feature_engineering import carry_unchanged

    stored = build_features(clean_rows(), EVENT)
    fresh = build_features(clean_rows(), EVENT + dt.timedelta(days=1))
    rows, _ = carry_unchanged(fresh, stored)
    assert rows["event_timestamp"].dtype == fresh["event_timestamp"].dtype
    assert rows["created"].dtype == fresh["created"].dtype
