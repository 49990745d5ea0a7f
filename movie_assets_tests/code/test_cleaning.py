"""Each cleaning rule on its own, then the whole clean step on a small raw frame."""

import datetime as dt

import pandas as pd

from movie_assets.domain.cleaning import (
    clean_movies,
    explain_drops,
    genre_names,
    genre_rows,
    normalize_language,
    rating_needs_votes,
    text_length,
    tidy_text,
    zero_means_unknown,
)


def test_zero_means_unknown():
    assert zero_means_unknown(pd.Series([0, 120, None])).tolist() == [pd.NA, 120, pd.NA]


def test_rating_needs_votes():
    out = rating_needs_votes(pd.Series([0.0, 7.5, 6.0]), pd.Series([0, 10, None]))
    assert out.isna().tolist() == [True, False, True] and out[1] == 7.5


def test_normalize_language():
    assert normalize_language(pd.Series([" EN", "fr", "", None])).tolist() == ["en", "fr", pd.NA, pd.NA]


def test_tidy_text_and_length():
    tidy = tidy_text(pd.Series(["  The   Thing ", "", None]))
    assert tidy.tolist() == ["The Thing", pd.NA, pd.NA]
    assert text_length(tidy).tolist() == [9, 0, 0]


def test_genre_names_follow_ids():
    assert genre_names(pd.Series([[18, 27], [], None])).tolist() == [["Drama", "Horror"], [], []]


def test_explain_drops():
    raw = pd.DataFrame({"status": ["Released", "Rumored", "Released"], "adult": [False, False, True]})
    assert explain_drops(raw).tolist() == [pd.NA, "not released yet (status Rumored)", "adult title"]


def raw_frame() -> pd.DataFrame:
    month = dt.date(2024, 1, 1)
    return pd.DataFrame(
        {
            "movie_id": [1, 2, 3],
            "title": [" Heat ", "Alien", "Soon"],
            "original_title": ["Heat", "Alien", "Soon"],
            "release_date": [dt.date(2024, 1, 5), dt.date(2024, 1, 6), dt.date(2024, 1, 7)],
            "release_month": [month] * 3,
            "original_language": ["EN", "en", "fr"],
            "status": ["Released", "Released", "Rumored"],
            "imdb_id": [None, "tt1", None],
            "adult": [False, False, False],
            "popularity": [1.0, 2.0, 3.0],
            "vote_average": [7.0, 0.0, 0.0],
            "vote_count": [10, 0, 0],
            "budget": [0, 1000, 0],
            "revenue": [0, 5000, 0],
            "runtime": [120, 0, 90],
            "genre_ids": [[80, 18], [27], []],
            "genres": [["Crime", "Drama"], [], []],
            "overview": ["A heist.", None, ""],
        }
    )


def test_clean_movies_keeps_released_rows_and_explains_the_rest():
    clean, dropped = clean_movies(raw_frame())
    assert clean["movie_id"].tolist() == [1, 2]
    assert dropped.to_dict("records") == [
        {"movie_id": 3, "release_month": dt.date(2024, 1, 1), "reason": "not released yet (status Rumored)"}
    ]
    first, second = clean.iloc[0], clean.iloc[1]
    assert first["title"] == "Heat" and first["original_language"] == "en" and pd.isna(first["budget"])
    assert first["release_year"] == 2024 and first["release_month_of_year"] == 1 and first["release_weekday"] == 4
    assert second["genres"] == ["Horror"] and pd.isna(second["vote_average"]) and pd.isna(second["runtime"])
    assert first["overview_length"] == 8 and second["overview_length"] == 0


def test_genre_rows_one_per_movie_and_genre():
    clean, _ = clean_movies(raw_frame())
    long = genre_rows(clean)
    assert list(zip(long["movie_id"], long["genre"], strict=True)) == [(1, "Crime"), (1, "Drama"), (2, "Horror")]
