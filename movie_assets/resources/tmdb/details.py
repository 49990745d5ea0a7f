"""Details documents (`GET /movie/{id}`) for many ids at once: the second half of a crawl, and the sync's read."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from movie_assets.domain.movie_records import UnreadableDocument
from movie_assets.domain.progress import Progress
from movie_assets.resources.tmdb.http import TmdbHttp
from movie_assets.resources.tmdb.source import TmdbError, TmdbUnreadableError


def fetch_details(
    http: TmdbHttp, pool: ThreadPoolExecutor, movie_ids: list, label: str, log, max_missing: int | None = None
) -> list[dict | None | UnreadableDocument]:
    """Details documents of the ids, in order, fetched by the pool with progress in the log; None is a 404.

    A document that never finished or never parsed is counted. With `max_missing` (a crawl) it is
    None, and its list item stands in; one more than `max_missing` fails the call (TMDB is broken
    for many movies). Without it (the change sync) it is an `UnreadableDocument`: a reject, never
    the None that would delete the movie, and the sync goes on.
    """
    progress = Progress(label, len(movie_ids), log)
    missing: list = []
    lock = threading.Lock()

    def fetch(movie_id):
        try:
            document = http.get_json(f"/movie/{movie_id}", allow_404=True)
        except TmdbUnreadableError as exc:
            http.stats.add(unreadable=1)
            if max_missing is None:
                progress.advance()
                return UnreadableDocument(str(exc))
            with lock:
                missing.append(movie_id)
                count = len(missing)
            if count > max_missing:
                raise TmdbError(
                    f"{label}: {count} details documents never arrived whole (the latest: {exc}); more than the "
                    f"{max_missing} one crawl may lose (max_missing_details), so TMDB looks slow or broken for many "
                    "movies: check TMDB's status, then re-run the partition."
                ) from None
            log(f"WARNING {exc} The movie's list item stands in for its details.")
            document = None
        progress.advance()
        return document

    return list(pool.map(fetch, movie_ids))
