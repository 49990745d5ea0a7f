"""TMDB's change list applied to stored movies: which ones change, move month, arrive or leave.

Pure planning over plain data, so every rule has a test of its own; the sync job does the
writing, in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from movie_assets.domain.movie_records import (
    RAW_COLUMNS,
    UnreadableDocument,
    details_problem,
    storable_payload,
    validate,
)

ANY_DATE = (dt.date(1, 1, 1), dt.date(9999, 12, 31))
REMOVED_COLUMNS = {
    "movie_id": "bigint",
    "release_month": "date",
    "reason": "text",
    "removed_at": "timestamp with time zone",
}
MONTH_COUNTS = ("changed", "moved_in", "moved_out", "new", "removed", "labels_changed")
LABEL = "vote_average"  # what movie_rating_model learns: a sync that changes many of them asks for a retrain
# What makes a stored row differ from a new document (the payload and fetch time always do).
COMPARED_COLUMNS = [c for c in RAW_COLUMNS if c not in ("payload", "fetched_at")]


@dataclass
class ChangePlan:
    """What one sync writes: rows to (re)insert, ids to delete first, removals, rejects, counts per month."""

    rows: list[dict] = field(default_factory=list)
    delete_ids: list[int] = field(default_factory=list)
    moved_ids: list[int] = field(default_factory=list)  # stored in another release month before
    removed: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    fetched_ids: list[int] = field(default_factory=list)
    fetched_at: dt.datetime | None = None  # UTC, when the documents were asked for
    months: dict[dt.date, Counter] = field(default_factory=lambda: defaultdict(Counter))
    outside_range: int = 0
    out_of_scope: int = 0
    unchanged: int = 0
    unknown_deleted: int = 0

    @property
    def touched_months(self) -> list[dt.date]:
        return sorted(self.months)

    def totals(self) -> dict[str, int]:
        total: Counter = Counter()
        for counts in self.months.values():
            total.update(counts)
        return {
            **{name: total[name] for name in MONTH_COUNTS},
            "rejected": len(self.rejects),
            "outside_range": self.outside_range,
            "out_of_scope": self.out_of_scope,
            "unchanged": self.unchanged,
            "unknown_deleted": self.unknown_deleted,
        }


def plan_changes(
    stored: dict[int, dict],
    documents: dict[int, dict | None | UnreadableDocument],
    partition_range: tuple[dt.date, dt.date],
    fetched_at: dt.datetime,
) -> ChangePlan:
    """Decide, per changed id, what happens to `movies_raw`.

    `stored` maps the ids already in `movies_raw` to their stored row (at least `release_month`);
    `documents` are the details TMDB answers now (None: 404, deleted; only a 404 deletes). A document
    that fails validation, carries another movie's id or never arrived whole leaves the stored row
    alone and becomes a reject with its reason: one record never stops the sync. A document
    that changes none of the typed columns touches nothing: TMDB lists every edit (a new
    poster, a translation), and today is read again every hour.
    """
    plan = ChangePlan(fetched_ids=sorted(documents), fetched_at=fetched_at)
    first, end = partition_range
    for movie_id, doc in sorted(documents.items()):
        old = stored.get(movie_id)
        old_month = old["release_month"] if old else None
        if isinstance(doc, UnreadableDocument):
            _reject(plan, movie_id, old_month, doc.reason, {"id": movie_id}, fetched_at)
            continue
        if doc is None:
            if old_month is None:
                plan.unknown_deleted += 1
                continue
            _remove(plan, movie_id, old_month, "TMDB answers 404: the movie was deleted", fetched_at)
            continue
        # Another movie's document (or one that fails validation) leaves the stored row alone: a reject.
        row, reason = (None, problem) if (problem := details_problem(movie_id, doc)) else validate(doc, ANY_DATE)
        if row is None:
            _reject(plan, movie_id, old_month or _release_month(doc), reason or "", storable_payload(doc), fetched_at)
            continue
        if doc.get("adult") or doc.get("video"):
            # The crawl asks TMDB for neither (include_adult / include_video = false); the change list has both.
            if old_month is None:
                plan.out_of_scope += 1
            else:
                _remove(
                    plan, movie_id, old_month, "now an adult title or a video: outside the crawl's scope", fetched_at
                )
            continue
        month = row["release_month"]
        if old is not None and all(row.get(c) == old.get(c) for c in COMPARED_COLUMNS):
            plan.unchanged += 1
            continue
        if not first <= month < end:
            if old_month is None:
                plan.outside_range += 1
            else:
                _remove(
                    plan,
                    movie_id,
                    old_month,
                    f"release date moved to {row['release_date']}, outside the partitions",
                    fetched_at,
                )
            continue
        row["fetched_at"] = fetched_at
        plan.rows.append(row)
        if old is None or row.get(LABEL) != old.get(LABEL):
            plan.months[month]["labels_changed"] += 1
        if old_month is None:
            plan.months[month]["new"] += 1
        elif old_month == month:
            plan.delete_ids.append(movie_id)
            plan.months[month]["changed"] += 1
        else:
            plan.delete_ids.append(movie_id)
            plan.moved_ids.append(movie_id)
            plan.months[old_month]["moved_out"] += 1
            plan.months[month]["moved_in"] += 1
    return plan


def _release_month(doc: dict) -> dt.date | None:
    """The month a document claims, where its date parses: where its reject is filed."""
    try:
        return dt.date.fromisoformat(str(doc.get("release_date"))).replace(day=1)
    except ValueError:
        return None


def _reject(plan: ChangePlan, movie_id: int, month: dt.date | None, reason: str, payload, at: dt.datetime) -> None:
    plan.rejects.append(
        {
            "movie_id": movie_id,
            "release_month": month,
            "reason": f"change sync: {reason}",
            "payload": payload,
            "fetched_at": at,
        }
    )


def _remove(plan: ChangePlan, movie_id: int, month: dt.date, reason: str, at: dt.datetime) -> None:
    plan.delete_ids.append(movie_id)
    plan.removed.append({"movie_id": movie_id, "release_month": month, "reason": reason, "removed_at": at})
    plan.months[month]["removed"] += 1
    plan.months[month]["labels_changed"] += 1
