"""Model features from `movies_clean`, and the time from which each movie's values hold.

`event_timestamp` means "valid from": the materialization in which a movie's feature
values last changed, not the release date and not merely the latest run. That needs
features that do not move with the clock, so the release date enters as
`release_days` (days since 1970-01-01), not as an age: for one training time the
two carry the same information. No feature is derived from the target (`vote_average`).
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
FLOAT_FEATURES = ["log_budget", "log_revenue", "log_vote_count", "runtime", "popularity", "release_days"]
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
    """One row per movie with `movie_id`, its features, and `event_timestamp` = `created` = `event_time` (UTC).

    The values do not depend on `event_time`; `carry_unchanged` gives unchanged movies their earlier time.
    """
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
            "release_days": (release - pd.Timestamp("1970-01-01")).dt.days.astype("float64"),
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


def same_values(fresh: pd.DataFrame, previous: pd.DataFrame) -> np.ndarray:
    """Per row of two aligned frames: every feature equal (a missing value equals a missing value).

    A feature the previous rows lack (written before it existed) counts as changed.
    """
    same = np.ones(len(fresh), dtype=bool)
    for name in FEATURE_NAMES:
        if name not in previous:
            return np.zeros(len(fresh), dtype=bool)
        new = pd.to_numeric(fresh[name], errors="coerce").to_numpy(dtype="float64")
        old = pd.to_numeric(previous[name], errors="coerce").to_numpy(dtype="float64")
        same &= (new == old) | (np.isnan(new) & np.isnan(old))
    return same


def carry_unchanged(fresh: pd.DataFrame, previous: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to store, superseded previous rows): the new rows, where an unchanged movie keeps its earlier times.

    A movie whose values equal its stored row still holds what it held since that row's
    `event_timestamp`, so it keeps it (and `created`); changed and new movies keep the
    fresh time. Superseded are the stored rows of changed movies and of movies no longer
    among `fresh` (moved to another month, or no longer clean): the history.
    """
    times = ["event_timestamp", "created"]
    if previous.empty:
        return fresh, previous.iloc[0:0]
    stored = previous.drop_duplicates("movie_id", keep="last").set_index("movie_id")
    known = fresh["movie_id"].isin(stored.index).to_numpy()
    aligned = stored.reindex(fresh["movie_id"].to_numpy())
    unchanged = known & same_values(fresh, aligned.reset_index(drop=True))
    rows = fresh.reset_index(drop=True)
    keep = pd.Series(unchanged)
    for column in times:
        earlier = pd.to_datetime(aligned[column], utc=True).dt.as_unit("us").reset_index(drop=True)
        rows[column] = pd.to_datetime(rows[column], utc=True).dt.as_unit("us").mask(keep, earlier)
    superseded = previous[~previous["movie_id"].isin(fresh["movie_id"][unchanged])]
    return rows, superseded.reset_index(drop=True)
