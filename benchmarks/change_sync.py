"""Change sync cost against the local TMDB server: 30 ms per answer, a real 40 requests/s limit.

    .venv/bin/python benchmarks/change_sync.py --changes 1000

The TMDB side of `sync_tmdb_changes` (the change list, then one details request per changed
movie) for a day of N changes. Prints requests per changed movie (goal <= 1.1), the achieved
rate as a fraction of the server's limit (goal >= 0.9), seconds per 1,000 changes, and the
429s it provoked (goal: about zero).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from harness import Samples, add_goals_argument, add_rounds_argument, goal_from, record_goals

from movie_assets.resources.tmdb import TmdbApiClient
from movie_platform.local_stack import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))  # the local TMDB server lives with the tests
from movie_assets_tests.tmdb_server import FakeTmdb, Faults, TmdbTestServer, crowded_month  # noqa: E402

LIMIT = 40
LATENCY_S = 0.03
MONTH = dt.date(2024, 3, 1)


def sync_once(changes: int) -> dict:
    movies = crowded_month(MONTH, changes)
    fake = FakeTmdb(movies, api_key="bench")
    today = dt.datetime.now(dt.timezone.utc).date()
    for movie in movies:
        fake.change(
            today, movie.details["id"], {**movie.details, "vote_count": 1 + int(movie.details.get("vote_count") or 0)}
        )
    fake.faults = Faults(latency_s=LATENCY_S, max_requests_per_second=LIMIT)
    fake.requests.clear()
    with TmdbTestServer(fake) as server:
        client = TmdbApiClient(base_url=server.base_url, api_key="bench")
        started = time.perf_counter()
        listed = client.changed_ids(today, today, log=lambda _msg: None)
        details = client.movie_details(listed.ids, log=lambda _msg: None)
        seconds = time.perf_counter() - started
    assert len(listed.ids) == changes and all(details.documents.values()), "every change listed and fetched"
    answered = fake.requests["changes"] + fake.requests["details"]
    return {
        "changes": changes,
        "requests": answered,
        "per_change": answered / changes,
        "seconds": seconds,
        "per_1000": seconds / changes * 1000,
        "fraction": answered / seconds / LIMIT,
        "429s": fake.requests["429"],
        "discover": fake.requests["discover"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    add_rounds_argument(parser)
    add_goals_argument(parser)
    args = parser.parse_args()
    rows = [sync_once(args.changes) for _ in range(args.rounds)]
    print(f"local TMDB: {LATENCY_S * 1000:.0f} ms per answer, limit {LIMIT} req/s; {args.changes:,} changed movies")
    print(
        f"{'round':>5} | {'requests':>8} | {'req/change (goal <= 1.1)':>24} | {'s':>6} | {'s/1000 changes':>14} | "
        f"{'of limit (goal >= 0.9)':>22} | 429s | discover"
    )
    for number, row in enumerate(rows, 1):
        print(
            f"{number:>5} | {row['requests']:>8} | {row['per_change']:>24.3f} | {row['seconds']:>6.1f} | "
            f"{row['per_1000']:>14.1f} | {row['fraction']:>21.2f}x | {row['429s']:>4} | {row['discover']:>8}"
        )
    fraction = Samples([r["fraction"] for r in rows])
    per_change = Samples([r["per_change"] for r in rows])
    print(f"median of {len(rows)} rounds: {fraction.describe()}x of the limit, {per_change.describe('.3f')} req/change")
    print()
    record_goals(
        args.goals,
        [
            goal_from(f"Change sync {args.changes:,} changes: requests per change", per_change, 1.1, "", False),
            goal_from("Change sync: rate vs TMDB's limit", fraction, 0.9, "x", True),
        ],
    )


if __name__ == "__main__":
    main()
