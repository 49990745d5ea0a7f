"""eda_stats values are pandas' own statistics on the same frame; plots are real PNGs."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from movie_assets.domain.cleaning import clean_movies
from movie_assets.domain.eda import NUMERIC, eda_stats_frame, report_plots, summary_markdown
from movie_assets.domain.movie_records import RAW_COLUMNS, to_frame, validate_month
from movie_assets.resources.tmdb_sample import movies_for_month


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    rows = []
    for month in (dt.date(2024, 1, 1), dt.date(2024, 2, 1)):
        window = (month, (month + dt.timedelta(days=32)).replace(day=1))
        pairs = [(m.list_item, m.details) for m in movies_for_month(month)]
        rows += validate_month(pairs, window, dt.datetime.now(dt.timezone.utc)).rows
    return clean_movies(to_frame(rows, RAW_COLUMNS))[0]


def stat(stats, month, column, name, label=None):
    rows = stats[(stats["release_month"] == month) & (stats["column_name"] == column) & (stats["stat"] == name)]
    if label is not None:
        rows = rows[rows["label"] == label]
    assert len(rows) == 1, (column, name, label)
    return rows["value"].iloc[0]


def test_numeric_stats_equal_pandas(clean):
    stats = eda_stats_frame(clean)
    month = dt.date(2024, 2, 1)
    frame = clean[pd.to_datetime(clean["release_month"]).dt.date == month]
    for column in NUMERIC:
        values = pd.to_numeric(frame[column]).astype("float64")
        assert stat(stats, month, column, "mean") == pytest.approx(values.mean())
        assert stat(stats, month, column, "std") == pytest.approx(values.std())
        assert stat(stats, month, column, "p50") == pytest.approx(values.median())
        assert stat(stats, month, column, "p25") == pytest.approx(values.quantile(0.25))
        assert stat(stats, month, column, "max") == pytest.approx(values.max())
        assert stat(stats, month, column, "missing_ratio") == pytest.approx(values.isna().mean())
        assert stat(stats, month, column, "count") == values.notna().sum()
    assert stat(stats, month, "*", "rows") == len(frame)


def test_categorical_top_k_and_genre_counts_equal_pandas(clean):
    stats = eda_stats_frame(clean)
    month = dt.date(2024, 1, 1)
    frame = clean[pd.to_datetime(clean["release_month"]).dt.date == month]
    top = frame["original_language"].value_counts()
    assert stat(stats, month, "original_language", "top_k", top.index[0]) == top.iloc[0]
    genres = frame["genres"].explode().value_counts()
    for genre, count in genres.items():
        assert stat(stats, month, "genres", "count", genre) == count


def test_report_plots_are_pngs_and_summary_is_a_table(clean):
    plots = report_plots(clean)
    assert set(plots) == {
        "vote_average_distribution.png",
        "movies_per_month.png",
        "genre_counts.png",
        "budget_vs_revenue.png",
    }
    assert all(png.startswith(b"\x89PNG") and len(png) > 5_000 for png in plots.values())
    summary = summary_markdown(clean)
    assert "vote_average" in summary and summary.count("\n") >= len(NUMERIC)
    assert not np.isnan(clean["vote_average"].astype("float64").mean())
