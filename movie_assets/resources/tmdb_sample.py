"""`TMDB_SOURCE=sample`: a deterministic, TMDB-shaped catalogue behind the same `TmdbSource` as the API client.

It speaks TMDB's wire format (discover list items and `/movie/{id}` details, with
the same field names) and keeps the API's quirks: list items with an empty
`release_date` or a null title that the details repair, numbers sent as strings,
duplicates across pages, and a few records that stay invalid. Ratings depend on
genre, runtime, budget and language, so a model has something real to learn. The
test TMDB server serves the same catalogue over HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from movie_assets.domain import clock
from movie_assets.domain.movie_records import TMDB_GENRES as GENRES
from movie_assets.domain.movie_records import UnreadableDocument
from movie_assets.domain.sample_span import SAMPLE_MONTHS, SAMPLE_START
from movie_assets.partitions import add_months, month_number, months_in
from movie_assets.resources.tmdb import PAGE_SIZE, Changes, Crawl, CrawlStats, Details, Pair, TmdbSource, Window

GENRE_IDS = np.array(list(GENRES))
GENRE_WEIGHTS = np.array([10, 6, 4, 12, 5, 8, 16, 4, 4, 2, 8, 2, 3, 7, 4, 3, 8, 1, 1], dtype=float)
GENRE_EFFECT = {18: 0.45, 36: 0.5, 99: 0.7, 16: 0.35, 10752: 0.3, 27: -0.7, 10770: -0.3, 35: -0.1, 28: -0.15}
LANGUAGES = ["en", "fr", "es", "ja", "ko", "de", "it", "hi", "zh", "pt"]
LANGUAGE_WEIGHTS = np.array([55, 7, 8, 7, 4, 4, 3, 5, 4, 3], dtype=float)
LANGUAGE_EFFECT = {"ja": 0.35, "ko": 0.3, "fr": 0.15, "hi": -0.1}
WORDS = (
    "night star city last river dark love war home road dream fire ghost king summer secret "
    "blue iron silent house storm garden echo winter wild heart shadow glass paper moon"
).split()
STATUS = ["Released", "Post Production", "In Production", "Rumored"]
STATUS_WEIGHTS = [0.95, 0.025, 0.015, 0.01]

MOVIES_PER_MONTH = 130
# The simulated change feed: from this day on, each movie gains votes every 7..29 days (its own
# period), as TMDB's vote counts move daily. A movie's document is a function of its id and the
# platform clock's day: a crawl and the details answer the same document (the one of today), and
# the feed lists the ids whose document changed on a day up to today. So a re-crawl after a sync
# returns the synced values, and no answer ever goes back in time.
FEED_START = dt.date(2025, 1, 1)


@dataclass(frozen=True)
class SampleMovie:
    """One movie as TMDB would send it: the discover list item and the details document.

    `rating` and `spread` are what its votes converge to and how far its first votes strayed
    (one standard normal draw): as votes come in, the average moves towards the rating, as on TMDB.
    """

    list_item: dict
    details: dict
    rating: float | None = None
    spread: float = 0.0


def sample_months() -> list[dt.date]:
    """First days of the months the default sample covers (24 recent months)."""
    return [add_months(SAMPLE_START, i) for i in range(SAMPLE_MONTHS)]


def movies_for_month(month_start: dt.date, movies_per_month: int = MOVIES_PER_MONTH) -> list[SampleMovie]:
    """All sample movies released in the month starting at `month_start` (deterministic).

    Every random draw of the month is one vectorized numpy call (a million movies take
    seconds, not minutes); only the documents themselves are built per movie.
    """
    month_index = month_number(month_start) - month_number(dt.date(2000, 1, 1))
    if not (SAMPLE_START <= month_start < add_months(SAMPLE_START, SAMPLE_MONTHS)):
        return []
    rng = np.random.default_rng(1_000 + month_index)
    n = _month_size(rng, movies_per_month)
    days_in_month = (add_months(month_start, 1) - month_start).days
    # As Python lists: indexing a numpy array per value cost more than building the documents.
    d = {name: values.tolist() for name, values in _draws(rng, n, days_in_month).items()}
    return [_movie(month_index * 1_000_000 + i + 1, month_start, d, i) for i in range(n)]


def month_size(month_start: dt.date, movies_per_month: int = MOVIES_PER_MONTH) -> int:
    """How many movies `movies_for_month` returns, without building them (the month's first draw)."""
    if not (SAMPLE_START <= month_start < add_months(SAMPLE_START, SAMPLE_MONTHS)):
        return 0
    month_index = month_number(month_start) - month_number(dt.date(2000, 1, 1))
    return _month_size(np.random.default_rng(1_000 + month_index), movies_per_month)


def _month_size(rng: np.random.Generator, movies_per_month: int) -> int:
    return int(movies_per_month * rng.uniform(0.85, 1.15))


def _top_k(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """Per row, all choices ordered as weighted sampling without replacement would draw them (Gumbel-top-k)."""
    keys = np.log(weights / weights.sum()) + rng.gumbel(size=(n, len(weights)))
    return np.argsort(-keys, axis=1)


def _draws(rng: np.random.Generator, n: int, days_in_month: int) -> dict[str, np.ndarray]:
    """The month's random variables, one array each."""
    n_genres = rng.choice([1, 2, 3], size=n, p=[0.45, 0.4, 0.15])
    genre_order = GENRE_IDS[_top_k(rng, n, GENRE_WEIGHTS)[:, :3]]
    language = np.array(LANGUAGES)[rng.choice(len(LANGUAGES), size=n, p=LANGUAGE_WEIGHTS / LANGUAGE_WEIGHTS.sum())]
    runtime = np.where(rng.random(n) > 0.06, np.clip(rng.normal(102, 20, n), 60, 210).astype(int), 0)
    has_budget = rng.random(n) < 0.45
    budget = np.where(has_budget, np.exp(rng.normal(16.3, 1.3, n)).astype(np.int64) // 1000 * 1000, 0)
    revenue = np.where(
        has_budget & (rng.random(n) < 0.8),
        (budget * np.exp(rng.normal(0.6, 1.0, n))).astype(np.int64) // 1000 * 1000,
        0,
    )
    vote_count = np.where(rng.random(n) > 0.1, np.exp(rng.normal(3.5, 1.9, n)).astype(np.int64), 0)
    popularity = np.round(np.exp(rng.normal(1.8, 1.1, n)) + np.log1p(vote_count), 3)
    in_movie = np.arange(3) < n_genres[:, None]
    genre_effect = (np.vectorize(lambda g: GENRE_EFFECT.get(int(g), 0.0))(genre_order) * in_movie).sum(axis=1)
    quality = (
        6.1
        + genre_effect
        + np.vectorize(lambda lang: LANGUAGE_EFFECT.get(lang, 0.0))(language)
        + 0.012 * np.where(runtime > 0, runtime - 100, 0)
        + 0.08 * np.log1p(vote_count)
        + np.where(budget > 50_000_000, 0.15, 0.0)
        + rng.normal(0, 0.55, n)
    )
    spread = rng.normal(0, 1, n)
    noise = spread * 2.0 / np.sqrt(vote_count + 1)
    word_order = _top_k(rng, n, np.ones(len(WORDS)))[:, :3]
    return {
        "day": rng.integers(0, days_in_month, n),
        "n_genres": n_genres,
        "genres": genre_order,
        "language": language,
        "runtime": runtime,
        "budget": budget,
        "revenue": revenue,
        "vote_count": vote_count,
        "popularity": popularity,
        "vote_average": np.where(vote_count > 0, np.round(np.clip(quality + noise, 0, 10), 3), 0.0),
        "title_words": word_order,
        "title_length": rng.integers(1, 4, n),
        "overview_words": rng.integers(0, len(WORDS), (n, 5)),
        "overview_length": rng.integers(2, 6, n),
        "has_imdb": rng.random(n) > 0.15,
        "has_poster": rng.random(n) > 0.05,
        "status": rng.choice(len(STATUS), size=n, p=STATUS_WEIGHTS),
        "quirk": rng.random(n),
        "rating": quality,
        "spread": spread,
    }


def _movie(movie_id: int, month_start: dt.date, d: dict[str, list], i: int) -> SampleMovie:
    release = month_start + dt.timedelta(days=d["day"][i])
    genres = d["genres"][i][: d["n_genres"][i]]
    language = d["language"][i]
    title = " ".join(WORDS[w].capitalize() for w in d["title_words"][i][: d["title_length"][i]])
    overview = f"A story about {' and '.join(WORDS[w] for w in d['overview_words'][i][: d['overview_length'][i]])}."
    details = {
        "adult": False,
        "backdrop_path": f"/b{movie_id}.jpg",
        "belongs_to_collection": None,
        "budget": d["budget"][i],
        "genres": [{"id": g, "name": GENRES[g]} for g in genres],
        "homepage": "",
        "id": movie_id,
        "imdb_id": f"tt{movie_id:08d}" if d["has_imdb"][i] else None,
        "original_language": language,
        "original_title": title,
        "overview": overview,
        "popularity": d["popularity"][i],
        "poster_path": f"/p{movie_id}.jpg" if d["has_poster"][i] else None,
        "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
        "release_date": release.isoformat(),
        "revenue": d["revenue"][i],
        "runtime": d["runtime"][i],
        "spoken_languages": [{"iso_639_1": language, "english_name": language, "name": language}],
        "status": STATUS[d["status"][i]],
        "tagline": "",
        "title": title,
        "video": False,
        "vote_average": d["vote_average"][i],
        "vote_count": d["vote_count"][i],
    }
    list_item = {
        k: details[k]
        for k in (
            "adult",
            "backdrop_path",
            "id",
            "original_language",
            "original_title",
            "overview",
            "popularity",
            "poster_path",
            "release_date",
            "title",
            "video",
            "vote_average",
            "vote_count",
        )
    }
    list_item["genre_ids"] = genres
    _add_quirks(d["quirk"][i], list_item, details)
    return SampleMovie(list_item, details, rating=d["rating"][i], spread=d["spread"][i])


def _add_quirks(roll: float, item: dict, details: dict) -> None:
    """The API's real defects: most are repaired by the details, a few stay invalid."""
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


# ---- the simulated change feed -------------------------------------------------------
def vote_edits(movie_ids: np.ndarray, release_dates: np.ndarray, day: dt.date) -> np.ndarray:
    """How many times each movie's votes changed from FEED_START (or its release) through `day`."""
    ids = np.asarray(movie_ids, dtype=np.int64)
    period = 7 + ids % 23
    first = np.maximum(FEED_START.toordinal(), np.asarray(release_dates, dtype=np.int64))
    edits = (day.toordinal() + ids) // period - (first - 1 + ids) // period
    return np.maximum(edits, 0)


def as_of(movie: SampleMovie, day: dt.date) -> SampleMovie:
    """The movie as TMDB shows it on `day`: more votes, an average nearer its rating (quirky values stay)."""
    return current([movie], day)[0]


def current(movies: list[SampleMovie], day: dt.date) -> list[SampleMovie]:
    """`as_of` for many movies: their edits counted in one vectorized call (a crawl's month, a details batch)."""
    if not movies:
        return []
    ids = np.array([m.details["id"] for m in movies], dtype=np.int64)
    released = np.array([dt.date.fromisoformat(m.details["release_date"]).toordinal() for m in movies])
    return [_with_edits(m, edits) for m, edits in zip(movies, vote_edits(ids, released, day).tolist(), strict=True)]


def gains_votes(movie: SampleMovie) -> bool:
    """A movie nobody voted on stays unvoted (its average 0.0 is no rating to move), as do quirky values."""
    count, average = movie.details.get("vote_count"), movie.details.get("vote_average")
    return (
        movie.rating is not None
        and isinstance(count, int)
        and count >= 1
        and isinstance(average, float)
        and 0 <= average <= 10
    )


def _with_edits(movie: SampleMovie, edits: int) -> SampleMovie:
    if not edits or movie.rating is None or not gains_votes(movie):
        return movie
    details = movie.details
    votes_now = details["vote_count"] + 3 * edits
    # The first votes' error shrinks as votes come in: the average converges on the movie's rating.
    settled = movie.rating + movie.spread * 2.0 / (votes_now + 1) ** 0.5
    votes = {"vote_count": votes_now, "vote_average": round(min(10.0, max(0.0, settled)), 3)}
    # The list item keeps its quirk: a count it sends as a string stays a string.
    item = {k: str(v) if isinstance(movie.list_item.get(k), str) else v for k, v in votes.items()}
    return SampleMovie({**movie.list_item, **item}, {**details, **votes}, movie.rating, movie.spread)


def sample_catalogue(movies_per_month: int = MOVIES_PER_MONTH) -> list[SampleMovie]:
    """Every movie of the sample's months, as first released."""
    return [m for month in sample_months() for m in movies_for_month(month, movies_per_month)]


def changed_between(first_day: dt.date, last_day: dt.date, movies_per_month: int = MOVIES_PER_MONTH) -> list[int]:
    """Ids whose votes changed on a day in [first_day, last_day], like TMDB's /movie/changes: exactly the
    movies whose document changed (one whose votes never move is never listed)."""
    movies = [m for m in sample_catalogue(movies_per_month) if gains_votes(m)]
    if not movies:
        return []
    ids = np.array([m.details["id"] for m in movies], dtype=np.int64)
    released = np.array([dt.date.fromisoformat(m.details["release_date"]).toordinal() for m in movies])
    changed = vote_edits(ids, released, last_day) - vote_edits(ids, released, first_day - dt.timedelta(days=1)) > 0
    return sorted(int(i) for i in ids[changed])


def movie_by_id(movie_id: int, movies_per_month: int = MOVIES_PER_MONTH) -> SampleMovie | None:
    """One sample movie by id (its month is in the id), or None: an unknown id answers 404 at TMDB."""
    month_index, number = divmod(int(movie_id), 1_000_000)
    month = add_months(dt.date(2000, 1, 1), month_index)
    return (
        next((m for m in movies_for_month(month, movies_per_month) if m.details["id"] == movie_id), None)
        if number
        else None
    )


class TmdbSampleSource(TmdbSource):
    """The catalogue above, paged like the API (duplicates included)."""

    movies_per_month: int = Field(default=MOVIES_PER_MONTH, description="catalogue size per release month")

    @property
    def description(self) -> str:
        return f"TMDB sample ({self.movies_per_month} movies/month)"

    def crawl(self, window: Window, log: Callable[[str], None] = print) -> Crawl:
        """Every movie released in the window as it stands today: the values the change feed's details give."""
        start, end = window
        movies = current(self._released_in(window), clock.today())
        pairs: list[Pair] = []
        stats = CrawlStats(windows=1)
        for number, first in enumerate(range(0, len(movies), PAGE_SIZE)):
            page = movies[first : first + PAGE_SIZE]
            if number and number % 3 == 0:
                # TMDB repeats items across pages when popularity shifts mid-crawl.
                page = [movies[first - 1], *page]
                stats.add(duplicates=1)
            pairs += [(m.list_item, m.details) for m in page]
            stats.add(pages=1)
        # What the API would have asked: every page and one details document per movie.
        stats.add(listed=len(pairs), requests=stats.pages + len(movies))
        log(f"TMDB sample {start}..{end}: {len(movies)} movies in {stats.pages} pages")
        return Crawl(pairs, stats)

    def count_listed(self, window: Window) -> int:
        """Whole months are counted without building their movies: a range's estimate costs no memory."""
        start, end = window
        return sum(
            month_size(first, self.movies_per_month)
            if first >= start and last == add_months(first, 1)
            else len(self._released_in((max(first, start), last)))
            for first, last in months_in((start.replace(day=1), end))
        )

    def _released_in(self, window: Window) -> list[SampleMovie]:
        start, end = window
        months = [first for first, _ in months_in((start.replace(day=1), end))]
        return [
            m
            for month in months
            for m in movies_for_month(month, self.movies_per_month)
            if start.isoformat() <= m.details["release_date"] < end.isoformat()
        ]

    def changed_ids(self, first_day: dt.date, last_day: dt.date, log: Callable[[str], None] = print) -> Changes:
        """The ids changed on [first_day, last_day], up to today: a day to come has no changes yet."""
        last_day = min(last_day, clock.today())
        ids = changed_between(first_day, last_day, self.movies_per_month) if first_day <= last_day else []
        log(f"TMDB sample changes {first_day}..{last_day}: {len(ids)} movies (simulated feed)")
        return Changes(ids, CrawlStats(windows=1))

    def movie_details(self, movie_ids: list[int], log: Callable[[str], None] = print) -> Details:
        months: dict[int, dict[int, SampleMovie]] = {}  # each month built once, however many of its ids are asked
        for month_index in {int(i) // 1_000_000 for i in movie_ids}:
            month = add_months(dt.date(2000, 1, 1), month_index)
            months[month_index] = {m.details["id"]: m for m in movies_for_month(month, self.movies_per_month)}
        found = {i: m for i in movie_ids if (m := months[int(i) // 1_000_000].get(i))}
        now = dict(zip(found, current(list(found.values()), clock.today()), strict=True))
        documents: dict[int, dict | None | UnreadableDocument] = {
            i: now[i].details if i in now else None for i in movie_ids
        }
        return Details(documents, CrawlStats(details_missing=sum(d is None for d in documents.values())))
