"""A deterministic, TMDB-shaped movie catalogue for `TMDB_SOURCE=sample` and the test server.

It speaks TMDB's wire format (discover list items and `/movie/{id}` details, with
the same field names) and keeps the API's quirks: list items with an empty
`release_date` or a null title that the details repair, numbers sent as strings,
duplicates across pages, and a few records that stay invalid. Ratings depend on
genre, runtime, budget and language, so a model has something real to learn.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from movie_assets.movie_records import TMDB_GENRES as GENRES
from movie_assets.partitions import add_months

GENRE_IDS = np.array(list(GENRES))
GENRE_WEIGHTS = np.array([10, 6, 4, 12, 5, 8, 16, 4, 4, 2, 8, 2, 3, 7, 4, 3, 8, 1, 1], dtype=float)
GENRE_EFFECT = {18: 0.45, 36: 0.5, 99: 0.7, 16: 0.35, 10752: 0.3, 27: -0.7, 10770: -0.3, 35: -0.1, 28: -0.15}
LANGUAGES = ["en", "fr", "es", "ja", "ko", "de", "it", "hi", "zh", "pt"]
LANGUAGE_WEIGHTS = np.array([55, 7, 8, 7, 4, 4, 3, 5, 4, 3], dtype=float)
LANGUAGE_EFFECT = {"ja": 0.35, "ko": 0.3, "fr": 0.15, "hi": -0.1}
WORDS = ("night star city last river dark love war home road dream fire ghost king summer secret "
         "blue iron silent house storm garden echo winter wild heart shadow glass paper moon").split()
STATUS = ["Released", "Post Production", "In Production", "Rumored"]
STATUS_WEIGHTS = [0.95, 0.025, 0.015, 0.01]

SAMPLE_START = dt.date(2023, 1, 1)
SAMPLE_MONTHS = 24
MOVIES_PER_MONTH = 130


@dataclass(frozen=True)
class SampleMovie:
    """One movie as TMDB would send it: the discover list item and the details document."""

    list_item: dict
    details: dict


def sample_months() -> list[dt.date]:
    """First days of the months the default sample covers (24 recent months)."""
    return [add_months(SAMPLE_START, i) for i in range(SAMPLE_MONTHS)]


def movies_for_month(month_start: dt.date, movies_per_month: int = MOVIES_PER_MONTH) -> list[SampleMovie]:
    """All sample movies released in the month starting at `month_start` (deterministic)."""
    month_index = (month_start.year - 2000) * 12 + month_start.month - 1
    if not (SAMPLE_START <= month_start < add_months(SAMPLE_START, SAMPLE_MONTHS)):
        return []
    rng = np.random.default_rng(1_000 + month_index)
    n = int(movies_per_month * rng.uniform(0.85, 1.15))
    days_in_month = (add_months(month_start, 1) - month_start).days
    return [_movie(rng, month_index * 1_000_000 + i + 1, month_start, days_in_month) for i in range(n)]


def _movie(rng: np.random.Generator, movie_id: int, month_start: dt.date, days_in_month: int) -> SampleMovie:
    release = month_start + dt.timedelta(days=int(rng.integers(0, days_in_month)))
    n_genres = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
    genres = [int(g) for g in rng.choice(GENRE_IDS, size=n_genres, replace=False, p=GENRE_WEIGHTS / GENRE_WEIGHTS.sum())]
    language = str(rng.choice(LANGUAGES, p=LANGUAGE_WEIGHTS / LANGUAGE_WEIGHTS.sum()))
    runtime = int(np.clip(rng.normal(102, 20), 60, 210)) if rng.random() > 0.06 else 0
    has_budget = rng.random() < 0.45
    budget = int(np.exp(rng.normal(16.3, 1.3))) // 1000 * 1000 if has_budget else 0
    revenue = int(budget * np.exp(rng.normal(0.6, 1.0))) // 1000 * 1000 if has_budget and rng.random() < 0.8 else 0
    vote_count = int(np.exp(rng.normal(3.5, 1.9))) if rng.random() > 0.1 else 0
    popularity = round(float(np.exp(rng.normal(1.8, 1.1)) + np.log1p(vote_count)), 3)
    quality = (
        6.1
        + sum(GENRE_EFFECT.get(g, 0.0) for g in genres)
        + LANGUAGE_EFFECT.get(language, 0.0)
        + 0.012 * (runtime - 100 if runtime else 0)
        + 0.08 * np.log1p(vote_count)
        + (0.15 if budget > 50_000_000 else 0.0)
        + rng.normal(0, 0.55)
    )
    noise = rng.normal(0, 2.0 / np.sqrt(vote_count + 1))
    vote_average = round(float(np.clip(quality + noise, 0, 10)), 3) if vote_count else 0.0
    title = " ".join(w.capitalize() for w in rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False))
    overview = f"A story about {' and '.join(rng.choice(WORDS, size=int(rng.integers(2, 6))))}."
    details = {
        "adult": False,
        "backdrop_path": f"/b{movie_id}.jpg",
        "belongs_to_collection": None,
        "budget": budget,
        "genres": [{"id": g, "name": GENRES[g]} for g in genres],
        "homepage": "",
        "id": movie_id,
        "imdb_id": f"tt{movie_id:08d}" if rng.random() > 0.15 else None,
        "original_language": language,
        "original_title": title,
        "overview": overview,
        "popularity": popularity,
        "poster_path": f"/p{movie_id}.jpg" if rng.random() > 0.05 else None,
        "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
        "release_date": release.isoformat(),
        "revenue": revenue,
        "runtime": runtime,
        "spoken_languages": [{"iso_639_1": language, "english_name": language, "name": language}],
        "status": str(rng.choice(STATUS, p=STATUS_WEIGHTS)),
        "tagline": "",
        "title": title,
        "video": False,
        "vote_average": vote_average,
        "vote_count": vote_count,
    }
    list_item = {k: details[k] for k in (
        "adult", "backdrop_path", "id", "original_language", "original_title", "overview", "popularity",
        "poster_path", "release_date", "title", "video", "vote_average", "vote_count",
    )}
    list_item["genre_ids"] = genres
    _add_quirks(rng, list_item, details)
    return SampleMovie(list_item, details)


def _add_quirks(rng: np.random.Generator, item: dict, details: dict) -> None:
    """The API's real defects: most are repaired by the details, a few stay invalid."""
    roll = rng.random()
    if roll < 0.03:
        item["release_date"] = ""  # repaired by details
    elif roll < 0.05:
        item["title"] = None  # repaired by details
    elif roll < 0.08:
        item["vote_count"] = str(item["vote_count"])  # a number sent as a string
    elif roll < 0.09:
        details["title"] = ""  # still invalid after the merge -> rejected
        item["title"] = ""
    elif roll < 0.095:
        details["vote_average"] = 11.5  # out of range -> rejected
        item["vote_average"] = 11.5
