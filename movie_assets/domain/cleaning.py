"""Cleaning rules from `movies_raw` to `movies_clean`: one small, vectorized function per rule.

Each rule says why it exists. Rows a rule cannot keep are not dropped silently:
`explain_drops` labels them with a reason, and the asset reports the counts.
"""

from __future__ import annotations

import pandas as pd

from movie_assets.domain.movie_records import TMDB_GENRES

CLEAN_COLUMNS = {
    "movie_id": "bigint",
    "title": "text",
    "original_title": "text",
    "release_date": "date",
    "release_year": "integer",
    "release_month_of_year": "integer",
    "release_weekday": "integer",
    "release_month": "date",
    "original_language": "text",
    "status": "text",
    "imdb_id": "text",
    "genres": "text[]",
    "genre_ids": "integer[]",
    "runtime": "integer",
    "budget": "bigint",
    "revenue": "bigint",
    "vote_average": "double precision",
    "vote_count": "integer",
    "popularity": "double precision",
    "overview_length": "integer",
    "title_length": "integer",
}
GENRE_COLUMNS = {"movie_id": "bigint", "release_month": "date", "genre_id": "integer", "genre": "text"}
DROP_COLUMNS = {"movie_id": "bigint", "release_month": "date", "reason": "text"}
UNRELEASED = {"Rumored", "Planned", "In Production", "Post Production", "Canceled"}


def zero_means_unknown(values: pd.Series) -> pd.Series:
    """TMDB stores an unknown budget, revenue or runtime as 0; 0 would bias every mean, so it becomes NULL."""
    values = values.astype("Int64")
    return values.mask(values == 0)


def rating_needs_votes(vote_average: pd.Series, vote_count: pd.Series) -> pd.Series:
    """A 0.0 average from zero votes is no rating at all: NULL, not the worst possible score."""
    return vote_average.astype("Float64").mask(vote_count.fillna(0).astype("Int64") == 0)


def normalize_language(codes: pd.Series) -> pd.Series:
    """ISO 639-1 codes in lower case; blanks become NULL."""
    codes = codes.astype("string").str.strip().str.lower()
    return codes.mask(codes == "")


def tidy_text(text: pd.Series) -> pd.Series:
    """Collapse runs of whitespace and strip; blanks become NULL."""
    text = text.astype("string").str.replace(r"\s+", " ", regex=True).str.strip()
    return text.mask(text == "")


def text_length(text: pd.Series) -> pd.Series:
    """Characters in a (tidied) text, 0 when missing: overview and title length are features."""
    return text.str.len().fillna(0).astype("Int64")


def genre_names(genre_ids: pd.Series) -> pd.Series:
    """Names from TMDB's genre list, so names always agree with ids (the details may lack them)."""
    return pd.Series(
        [[TMDB_GENRES.get(int(g), f"genre {g}") for g in ids] if ids is not None else [] for ids in genre_ids],
        index=genre_ids.index,
        dtype=object,
    )


def explain_drops(raw: pd.DataFrame) -> pd.Series:
    """Why a row cannot be a clean movie (NULL = keep): adult titles and movies not released yet.

    Both are out of scope for a rating model, not defects; they are counted per reason.
    """
    reason = pd.Series(pd.NA, index=raw.index, dtype="string")
    reason = reason.mask(
        raw["status"].isin(UNRELEASED), "not released yet (status " + raw["status"].astype("string") + ")"
    )
    reason = reason.mask(raw["adult"].fillna(False).astype(bool), "adult title")
    return reason


def clean_movies(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(movies_clean rows, dropped rows with their reason) for a frame of `movies_raw` rows."""
    reasons = explain_drops(raw)
    dropped = pd.DataFrame({"movie_id": raw["movie_id"], "release_month": raw["release_month"], "reason": reasons})[
        reasons.notna()
    ]
    kept = raw[reasons.isna()]
    release = pd.to_datetime(kept["release_date"])
    title = tidy_text(kept["title"])
    overview = tidy_text(kept["overview"])
    clean = pd.DataFrame(
        {
            "movie_id": kept["movie_id"].astype("Int64"),
            "title": title,
            "original_title": tidy_text(kept["original_title"]),
            "release_date": kept["release_date"],
            "release_year": release.dt.year.astype("Int64"),
            "release_month_of_year": release.dt.month.astype("Int64"),
            "release_weekday": release.dt.weekday.astype("Int64"),
            "release_month": kept["release_month"],
            "original_language": normalize_language(kept["original_language"]),
            "status": kept["status"],
            "imdb_id": kept["imdb_id"],
            "genres": genre_names(kept["genre_ids"]),
            "genre_ids": kept["genre_ids"],
            "runtime": zero_means_unknown(kept["runtime"]),
            "budget": zero_means_unknown(kept["budget"]),
            "revenue": zero_means_unknown(kept["revenue"]),
            "vote_average": rating_needs_votes(kept["vote_average"], kept["vote_count"]),
            "vote_count": kept["vote_count"].astype("Int64"),
            "popularity": kept["popularity"].astype("Float64"),
            "overview_length": text_length(overview),
            "title_length": text_length(title),
        }
    )
    return clean.reset_index(drop=True), dropped.reset_index(drop=True)


def genre_rows(clean: pd.DataFrame) -> pd.DataFrame:
    """The long `movie_genres` table: one row per (movie, genre), for GROUP BY genre in SQL."""
    long = clean[["movie_id", "release_month", "genre_ids"]].explode("genre_ids").dropna(subset=["genre_ids"])
    genre_ids = long["genre_ids"].astype(int)
    return pd.DataFrame(
        {
            "movie_id": long["movie_id"].astype("Int64"),
            "release_month": long["release_month"],
            "genre_id": genre_ids.astype("Int64"),
            "genre": genre_ids.map(lambda g: TMDB_GENRES.get(g, f"genre {g}")),
        }
    ).reset_index(drop=True)
