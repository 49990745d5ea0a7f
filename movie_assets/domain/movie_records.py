"""From TMDB documents to typed `movies_raw` rows: merge, validate, explain every reject.

The details document is the source of truth: a defect in a discover list item
that the details correct (null title, empty date, a number sent as a string) is
repaired, not rejected. Only records still invalid after the merge are rejects,
each with a reason and its raw payload.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pandas as pd

# TMDB's movie genre list (GET /genre/movie/list): ids are stable, names are the English ones.
TMDB_GENRES = {
    28: "Action",
    12: "Adventure",
    16: "Animation",
    35: "Comedy",
    80: "Crime",
    99: "Documentary",
    18: "Drama",
    10751: "Family",
    14: "Fantasy",
    36: "History",
    27: "Horror",
    10402: "Music",
    9648: "Mystery",
    10749: "Romance",
    878: "Science Fiction",
    10770: "TV Movie",
    53: "Thriller",
    10752: "War",
    37: "Western",
}
RAW_COLUMNS = {
    "movie_id": "bigint",
    "title": "text",
    "original_title": "text",
    "release_date": "date",
    "release_month": "date",
    "original_language": "text",
    "status": "text",
    "imdb_id": "text",
    "adult": "boolean",
    "popularity": "double precision",
    "vote_average": "double precision",
    "vote_count": "integer",
    "budget": "bigint",
    "revenue": "bigint",
    "runtime": "integer",
    "genre_ids": "integer[]",
    "genres": "text[]",
    "overview": "text",
    "payload": "jsonb",
    "fetched_at": "timestamp with time zone",
}
REJECT_COLUMNS = {
    "movie_id": "bigint",
    "release_month": "date",
    "reason": "text",
    "payload": "jsonb",
    "fetched_at": "timestamp with time zone",
}
INT_FIELDS = ("vote_count", "budget", "revenue", "runtime")
FLOAT_FIELDS = ("popularity", "vote_average")


@dataclass
class ValidatedMonth:
    rows: list[dict]
    rejects: list[dict]


def merge(list_item: dict, details: dict | None) -> dict:
    """The details win wherever they carry a usable value; the list item fills the gaps."""
    merged = dict(list_item)
    for key, value in (details or {}).items():
        if value not in (None, "") or key not in merged:
            merged[key] = value
    if "genre_ids" not in merged and merged.get("genres"):
        merged["genre_ids"] = [g["id"] for g in merged["genres"]]
    return merged


INT_LIMITS = {"vote_count": 2**31 - 1, "runtime": 2**31 - 1, "budget": 2**63 - 1, "revenue": 2**63 - 1}


def validate(doc: dict, window: tuple[dt.date, dt.date]) -> tuple[dict | None, str | None]:
    """Return (row, None) for a valid document or (None, reason) for a reject; never raises on bad input."""
    try:
        return _validate(doc, window)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        return None, f"malformed record: {type(exc).__name__}: {exc}"


def _validate(doc: dict, window: tuple[dt.date, dt.date]) -> tuple[dict | None, str | None]:
    raw_id = doc.get("id")
    if raw_id is None:
        return None, "id is not an integer: None"
    try:
        movie_id = int(raw_id)
    except (TypeError, ValueError):
        return None, f"id is not an integer: {raw_id!r}"
    title = doc.get("title")
    if title is not None and not isinstance(title, str):
        return None, f"title is not text: {title!r}"
    title = (title or "").strip()
    if not title:
        return None, "title is missing"
    try:
        text = doc.get("release_date") or ""
        if not isinstance(text, str) or len(text) != 10:
            raise ValueError(text)
        release = dt.date.fromisoformat(text)
    except ValueError:
        return None, f"release_date is missing or malformed: {doc.get('release_date')!r}"
    start, end = window
    if not (start <= release < end):
        return None, f"release_date {release} is outside the requested window {start}..{end}"
    numbers: dict[str, int | float | None] = {}
    for field in INT_FIELDS + FLOAT_FIELDS:
        value = doc.get(field)
        if value in (None, ""):
            numbers[field] = None
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None, f"{field} is not a number: {value!r}"
        if number != number or number in (float("inf"), float("-inf")):
            return None, f"{field} is not a finite number: {value!r}"
        if field in INT_FIELDS and abs(number) > INT_LIMITS[field]:
            return None, f"{field} is out of range: {value!r}"
        numbers[field] = int(number) if field in INT_FIELDS else number
    if numbers["vote_average"] is not None and not 0 <= numbers["vote_average"] <= 10:
        return None, f"vote_average {numbers['vote_average']} is outside 0..10"
    for field in ("vote_count", "budget", "revenue", "runtime"):
        amount = numbers[field]
        if amount is not None and amount < 0:
            return None, f"{field} is negative: {amount}"
    genres = doc.get("genres") or []
    return {
        "movie_id": movie_id,
        "title": title,
        "original_title": doc.get("original_title"),
        "release_date": release,
        "release_month": release.replace(day=1),
        "original_language": doc.get("original_language"),
        "status": doc.get("status"),
        "imdb_id": doc.get("imdb_id") or None,
        "adult": bool(doc.get("adult", False)),
        **numbers,
        "genre_ids": [int(g) for g in doc.get("genre_ids") or [g["id"] for g in genres]],
        "genres": [g["name"] for g in genres],
        "overview": doc.get("overview"),
        "payload": doc,
    }, None


def validate_month(
    pairs: list[tuple[dict, dict | None]], window: tuple[dt.date, dt.date], fetched_at: dt.datetime
) -> ValidatedMonth:
    """Merge and validate (list item, details) pairs; a repeated id counts once (first one wins).

    Rejects are filed under the crawled month, so re-crawling a month replaces them too.
    """
    rows, rejects, seen = [], [], set()
    month = window[0].replace(day=1)
    for item, details in pairs:
        doc = merge(item, details)
        key = doc.get("id")
        if key in seen:
            continue
        seen.add(key)
        row, reason = validate(doc, window)
        if row is None:
            rejects.append(
                {
                    "movie_id": _int_or_none(key),
                    "release_month": month,
                    "reason": reason,
                    "payload": doc,
                    "fetched_at": fetched_at,
                }
            )
            continue
        row["fetched_at"] = fetched_at
        rows.append(row)
    return ValidatedMonth(rows, rejects)


def to_frame(records: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    """A frame with exactly the table's columns, in order, with nullable dtypes."""
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    for name, sql_type in columns.items():
        if sql_type in ("bigint", "integer"):
            frame[name] = frame[name].astype("Int64")
        elif sql_type == "double precision":
            frame[name] = frame[name].astype("Float64")
    return frame


def payload_json(payload) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
