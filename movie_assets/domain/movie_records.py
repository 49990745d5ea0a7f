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


@dataclass(frozen=True)
class UnreadableDocument:
    """TMDB answered for this movie, but never with its document (cut, not JSON, past the deadline).

    The change sync files it as a reject and goes on; it is never the 404 that deletes a movie.
    """

    reason: str


def details_problem(requested_id, details: dict) -> str | None:
    """Why a details document is not the document of the movie asked for (another movie's, or no id)."""
    if movie_id_of(details.get("id")) != movie_id_of(requested_id) or movie_id_of(requested_id) is None:
        return (
            f"details asked for id {requested_id!r} carry id {repr(details.get('id'))[:40]}: another movie's document"
        )
    return None


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
    genres = merged.get("genres")
    if "genre_ids" not in merged and isinstance(genres, list) and all(isinstance(g, dict) for g in genres):
        merged["genre_ids"] = [g.get("id") for g in genres]
    return merged


MAX_MOVIE_ID = 2**63 - 1  # a bigint
# TMDB's largest real documents are tens of kB; 1 MB is room for any, and refuses a 5 MB overview.
MAX_DOCUMENT_BYTES = 1_000_000


def unstorable_text(doc, path: str = "") -> str | None:
    """Why PostgreSQL cannot store this document's text (a NUL byte, a lone surrogate), naming the field."""
    if isinstance(doc, str):
        if "\x00" in doc:
            return f"{path or 'text'} contains a NUL byte"
        if any(0xD800 <= ord(c) <= 0xDFFF for c in doc):
            return f"{path or 'text'} contains a lone surrogate (not UTF-8)"
        return None
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        problem = (unstorable_text(key, f"a key in {path or 'the document'}") if isinstance(key, str) else None) or (
            unstorable_text(value, here)
        )
        if problem:
            return problem
    return None


def document_text(doc: dict) -> tuple[str, str | None]:
    """The document as JSON text, and why it cannot be stored as it is (unstorable text, over the size limit).

    The text is what the row stores as its jsonb payload: one dump serves the check and the write.
    """
    try:
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or Infinity in a field nothing else reads: PostgreSQL's jsonb refuses the whole COPY
        return json.dumps(
            storable_payload(doc), ensure_ascii=False
        ), "contains NaN or Infinity, which JSON cannot carry"
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return text, unstorable_text(doc) or "contains a lone surrogate (not UTF-8)"
    if "\\u0000" in text and (problem := unstorable_text(doc)):  # else the literal text \u0000
        return text, problem
    if size > MAX_DOCUMENT_BYTES:
        return text, f"document is {size / 1e6:.1f} MB, over the {MAX_DOCUMENT_BYTES / 1e6:.0f} MB limit"
    return text, None


MAX_PAYLOAD_DEPTH = 64  # TMDB's documents nest 3 levels; deeper is hostile, and Python's json recurses


def storable_payload(doc, depth: int = 0):
    """A reject's payload as jsonb can hold it: NULs and lone surrogates replaced, NaN/Infinity as text,
    nesting past MAX_PAYLOAD_DEPTH cut, and a document over the size limit cut to its id and size (the
    reason says why)."""
    if depth > MAX_PAYLOAD_DEPTH:
        return f"(nested deeper than {MAX_PAYLOAD_DEPTH} levels: cut)"
    if isinstance(doc, str):
        return doc.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if isinstance(doc, float) and (doc != doc or doc in (float("inf"), float("-inf"))):
        return str(doc)
    if isinstance(doc, dict):
        cleaned = {storable_payload(str(k)): storable_payload(v, depth + 1) for k, v in doc.items()}
        size = len(json.dumps(cleaned).encode())
        if size > MAX_DOCUMENT_BYTES:
            return {"id": cleaned.get("id"), "title": str(cleaned.get("title"))[:300], "truncated": True, "bytes": size}
        return cleaned
    if isinstance(doc, list):
        return [storable_payload(v, depth + 1) for v in doc]
    return doc


def movie_id_of(value) -> int | None:
    """A TMDB id as stored: a positive integer, sent as a JSON integer or a string of digits; else None.

    `int()` alone would turn 1007.9 into 1007 (two movies, one id) and accept -1006, and
    deduplicating raw values would keep 1015 and "1015" as two movies.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value.lstrip("0")) > len(str(MAX_MOVIE_ID)):  # no bigint; int() of 5,000 digits raises
            return None
        value = int(value)
    if isinstance(value, int) and 0 < value <= MAX_MOVIE_ID:
        return value
    return None


TEXT_FIELDS = ("original_title", "original_language", "status", "imdb_id", "overview")  # str or null
MAX_GENRE_ID = 2**31 - 1  # an integer[] element


def _is_genre_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_GENRE_ID


INT_LIMITS = {"vote_count": 2**31 - 1, "runtime": 2**31 - 1, "budget": 2**63 - 1, "revenue": 2**63 - 1}


def validate(doc: dict, window: tuple[dt.date, dt.date]) -> tuple[dict | None, str | None]:
    """Return (row, None) for a valid document or (None, reason) for a reject; never raises on bad input."""
    try:
        return _validate(doc, window)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        return None, f"malformed record: {type(exc).__name__}: {str(exc)[:200]}"


def _validate(doc: dict, window: tuple[dt.date, dt.date]) -> tuple[dict | None, str | None]:
    movie_id = movie_id_of(doc.get("id"))
    if movie_id is None:
        return None, f"id is not a positive integer: {repr(doc.get('id'))[:40]}"
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
    if not isinstance(genres, list) or not all(isinstance(g, dict) and "id" in g and "name" in g for g in genres):
        return None, f"genres is not a list of {{id, name}}: {repr(genres)[:60]}"
    genre_ids = doc.get("genre_ids") or [g["id"] for g in genres]
    if not isinstance(genre_ids, list) or not all(_is_genre_id(g) for g in genre_ids):
        return None, f"genre ids are not integers in 1..{MAX_GENRE_ID}: {repr(genre_ids)[:60]}"
    if not all(isinstance(g["name"], str) for g in genres):
        return None, f"genre names are not text: {repr(genres)[:60]}"
    for field in TEXT_FIELDS:
        if doc.get(field) is not None and not isinstance(doc.get(field), str):
            return None, f"{field} is not text: {repr(doc.get(field))[:40]}"
    adult = doc.get("adult")
    if adult is not None and not isinstance(adult, bool):
        return None, f"adult is not a boolean: {adult!r}"
    payload, problem = document_text(doc)
    if problem:
        return None, problem
    return {
        "movie_id": movie_id,
        "title": title,
        "original_title": doc.get("original_title"),
        "release_date": release,
        "release_month": release.replace(day=1),
        "original_language": doc.get("original_language"),
        "status": doc.get("status"),
        "imdb_id": doc.get("imdb_id") or None,
        "adult": bool(adult),
        **numbers,
        "genre_ids": [int(g) for g in genre_ids],
        "genres": [g["name"] for g in genres],
        "overview": doc.get("overview"),
        "payload": payload,  # JSON text: PostgreSQL parses it into jsonb, no second dump on the way
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
        # Another movie's document never stands in for this one: the movie is a reject, not a second copy of it.
        mismatch = details_problem(item.get("id"), details) if details is not None else None
        doc = merge(item, None if mismatch else details)
        key = movie_id_of(doc.get("id"))
        if key is not None and key in seen:
            continue
        seen.add(key)
        row, reason = (None, mismatch) if mismatch else validate(doc, window)
        if row is None:
            rejects.append(
                {
                    "movie_id": key,
                    "release_month": month,
                    "reason": reason,
                    "payload": storable_payload(doc),
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
