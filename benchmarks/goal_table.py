"""The one goal table of `make bench`: every benchmark's goal rows, read from the run's JSON-lines file.

    .venv/bin/python benchmarks/goal_table.py .movie_platform/bench/goals-<UTC>.jsonl
    .venv/bin/python benchmarks/goal_table.py FILE --results benchmarks/RESULTS.md

Prints value (median, min..max), goal and verdict per row. With --results it rewrites the
goal-table section of RESULTS.md (between its marker comments, added at the top when missing)
with the table, the machine it ran on and the commands that measured it; the rest of the file
(how each figure was reached) is left as it is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from pathlib import Path

import psutil
from harness import GoalRow, format_table, load_goals

START = "<!-- goal-table:start (written by benchmarks/goal_table.py; edits here are overwritten) -->"
END = "<!-- goal-table:end -->"


def machine() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"table written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC (load average then: {load})"
    )


def section(rows: list[GoalRow], source: Path) -> str:
    commands = list(dict.fromkeys(row.command for row in rows if row.command))
    missed = [row for row in rows if not row.met]
    notes = [f"- {row.goal}: {row.note}" for row in rows if row.note]
    lines = [
        START,
        "## Goal table (`make bench`)",
        "",
        f"Machine: {machine()}. Every value is the median of interleaved rounds (min..max beside it), each",
        "platform figure measured in the same run as its baseline. "
        f"{len(rows) - len(missed)} of {len(rows)} goals met.",
        "",
        format_table(rows),
        "",
    ]
    if notes:
        lines += ["Notes:", *notes, ""]
    lines += [
        f"Commands (`make bench`, after `.venv/bin/movie-platform up`; rows from `{source.name}`):",
        "",
        "```",
        *commands,
        f".venv/bin/python benchmarks/goal_table.py {source} --results benchmarks/RESULTS.md",
        "```",
        END,
    ]
    return "\n".join(lines)


def rewrite(results: Path, text: str) -> None:
    """Replace the marked section, or insert it after the first heading when the file has none yet."""
    old = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    if START in old and END in old:
        before, rest = old.split(START, 1)
        after = rest.split(END, 1)[1]
        new = before + text + after
    else:
        head, _, body = old.partition("\n")
        new = f"{head}\n\n{text}\n{body}"
    results.write_text(new, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("goals", type=Path, help="the JSON-lines file the benchmarks appended their rows to")
    parser.add_argument("--results", type=Path, help="rewrite this RESULTS.md's goal-table section")
    args = parser.parse_args()
    if not args.goals.exists():
        raise SystemExit(f"{args.goals}: no goal rows (did any benchmark run with --goals {args.goals}?)")
    rows = load_goals(args.goals)
    print(format_table(rows))
    missed = [row for row in rows if not row.met]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} goals met" + (": NOT met: " if missed else ""), end="")
    print("; ".join(row.goal for row in missed))
    if args.results:
        rewrite(args.results, section(rows, args.goals))
        print(f"wrote the goal table into {args.results}")


if __name__ == "__main__":
    main()
