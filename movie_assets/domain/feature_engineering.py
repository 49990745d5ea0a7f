"""Model features from `movies_clean`, computed as of one event time.

`event_timestamp` is when the values were computed, not the release date: Feast's
incremental materialization windows and TTL are measured on it. No feature is
derived from the target (`vote_average`); `age_days` is measured at the event time,
so nothing from after it leaks in.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

from movie_assets.domain.movie_records import TMDB_GENRES

LANGUAGES = ["en", "fr", "es", "ja", "ko", "de", "it", "hi", "zh"]


def genre_feature(name: str) -> str:
    return "genre_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


GENRE_FEATURES = {genre_id: genre_feature(name) for genre_id, name in TMDB_GENRES.items()}
LANGUAGE_FEATURES = [f"lang_{code}" for code in LANGUAGES] + ["lang_other"]
FLOAT_FEATURES = ["log_budget", "log_revenue", "log_vote_count", "runtime", "popularity", "age_days"]
INT_FEATURES = [
    "release_year",
    "release_month_of_year",
    "release_weekday",
    "overview_length",
    "title_length",
    *GENRE_FEATURES.values(),
    *LANGUAGE_FEATURES,
]
FEATURE_NAMES = FLOAT_FEATURES + INT_FEATURES

# Postgres `features` table: the same rows, plus the partition column for SQL.
FEATURE_TABLE_COLUMNS = {
    "movie_id": "bigint",
    "release_month": "date",
    "event_timestamp": "timestamp with time zone",
    "created": "timestamp with time zone",
    **{name: "double precision" for name in FLOAT_FEATURES},
    **{name: "integer" for name in INT_FEATURES},
}


def build_features(clean: pd.DataFrame, event_time: dt.datetime) -> pd.DataFrame:
    """One row per movie: the features as of `event_time` (UTC), with `movie_id`, `event_timestamp`, `created`."""
    as_of = (
        pd.Timestamp(event_time).tz_convert("UTC")
        if pd.Timestamp(event_time).tzinfo
        else pd.Timestamp(event_time, tz="UTC")
    )
    release = pd.to_datetime(clean["release_date"])
    numeric = lambda column: pd.to_numeric(clean[column], errors="coerce").astype("float64")  # noqa: E731
    features = pd.DataFrame(
        {
            "movie_id": clean["movie_id"].astype("int64").to_numpy(),
            "event_timestamp": as_of,
            "created": as_of,
            "log_budget": np.log1p(numeric("budget")),
            "log_revenue": np.log1p(numeric("revenue")),
            "log_vote_count": np.log1p(numeric("vote_count").fillna(0)),
            "runtime": numeric("runtime"),
            "popularity": numeric("popularity"),
            "age_days": (as_of.tz_localize(None).normalize() - release).dt.days.astype("float64"),
            "release_year": release.dt.year.astype("int64"),
            "release_month_of_year": release.dt.month.astype("int64"),
            "release_weekday": release.dt.weekday.astype("int64"),
            "overview_length": pd.to_numeric(clean["overview_length"]).fillna(0).astype("int64"),
            "title_length": pd.to_numeric(clean["title_length"]).fillna(0).astype("int64"),
        },
        index=clean.index,
    )
    genre_sets = [set(ids) if ids is not None else set() for ids in clean["genre_ids"]]
    for genre_id, name in GENRE_FEATURES.items():
        features[name] = np.fromiter((genre_id in ids for ids in genre_sets), dtype=np.int64, count=len(genre_sets))
    language = clean["original_language"].astype("string").fillna("")
    for code in LANGUAGES:
        features[f"lang_{code}"] = (language == code).astype("int64").to_numpy()
    features["lang_other"] = (~language.isin(LANGUAGES)).astype("int64").to_numpy()
    return features.reset_index(drop=True)
