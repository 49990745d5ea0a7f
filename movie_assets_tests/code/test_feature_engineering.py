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
    assert row["age_days"] == 30
    assert row["log_budget"] == pytest.approx(13.8155, abs=1e-3) and pd.isna(row["log_revenue"])
    assert row["release_year"] == 2024 and row["release_month_of_year"] == 6 and row["release_weekday"] == 5


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
