"""Shared measuring rules for every benchmark: interleaved rounds, medians with their spread, goal rows.

One noisy second must not flip a verdict, so each path runs at least three times, the paths of
one comparison take turns within each round (a slow minute hits them all), and a figure is the
median with its min..max beside it. Every script can append its goal rows to a JSON-lines file
(`--goals FILE`); `goal_table.py` prints them as the one table `make bench` ends with.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

MIN_ROUNDS = 3


@dataclass
class Samples:
    """Repeated measurements of one path (seconds, or any other per-round figure)."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.values), max(self.values)

    def describe(self, fmt: str = ".2f") -> str:
        low, high = self.spread
        return f"{self.median:{fmt}} ({low:{fmt}}..{high:{fmt}}, n={len(self.values)})"


def interleaved(
    paths: dict[str, Callable[[], object]],
    rounds: int = MIN_ROUNDS,
    before_each: Callable[[str], object] | None = None,
) -> dict[str, Samples]:
    """Seconds of each path over `rounds` rounds; within a round the paths run in turn, the order rotating.

    `before_each(path)` runs untimed before each timed call (e.g. truncating a target table).
    """
    if rounds < MIN_ROUNDS:
        raise ValueError(f"at least {MIN_ROUNDS} rounds, got {rounds}")
    names = list(paths)
    samples = {name: Samples() for name in names}
    for round_no in range(rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            if before_each is not None:
                before_each(name)
            started = time.perf_counter()
            paths[name]()
            samples[name].values.append(time.perf_counter() - started)
    return samples


def ratio(numerator: Samples, denominator: Samples) -> Samples:
    """Per-round ratios of two interleaved paths (round i of one against round i of the other)."""
    return Samples([n / d for n, d in zip(numerator.values, denominator.values, strict=True)])


@dataclass(frozen=True)
class GoalRow:
    """One line of the goal table: a measured figure, the promise, and whether it holds."""

    goal: str  # what is measured, e.g. "Postgres read 1M rows vs read_sql"
    value: float
    target: float
    unit: str  # "x", "s", "ms", "MB", "GiB", "req/s"
    higher_is_better: bool
    spread: tuple[float, float] | None = None
    note: str = ""
    command: str = ""  # the benchmark command line that measured it (filled in by record_goals)

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def cells(self) -> tuple[str, str, str, str]:
        value = f"{self.value:,.2f} {self.unit}".strip()
        if self.spread is not None:
            value += f" ({self.spread[0]:,.2f}..{self.spread[1]:,.2f})"
        target = f"{'>=' if self.higher_is_better else '<='} {self.target:,.2f} {self.unit}".strip()
        return self.goal, value, target, "met" if self.met else "NOT met"


def goal_from(goal: str, samples: Samples, target: float, unit: str, higher_is_better: bool, note: str = "") -> GoalRow:
    return GoalRow(goal, samples.median, target, unit, higher_is_better, samples.spread, note)


def add_rounds_argument(parser: argparse.ArgumentParser, default: int = MIN_ROUNDS) -> None:
    """`--rounds`, refused below MIN_ROUNDS when the arguments are parsed: one noisy round decides nothing."""

    def rounds(text: str) -> int:
        if not text.isdigit() or int(text) < MIN_ROUNDS:
            raise argparse.ArgumentTypeError(f"at least {MIN_ROUNDS} rounds, not {text}")
        return int(text)

    parser.add_argument("--rounds", type=rounds, default=default, help=f"interleaved rounds (at least {MIN_ROUNDS})")


def add_goals_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--goals", type=Path, help="append this run's goal rows (JSON lines) to this file")


def record_goals(path: Path | None, rows: list[GoalRow]) -> None:
    """Print the rows, and append them to `path` for the combined table, each with this command line."""
    print(format_table(rows))
    if path is None:
        return
    command = this_command()
    with path.open("a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(asdict(replace(row, command=row.command or command))) + "\n")


def this_command() -> str:
    """How this benchmark was started, without its --goals file (a scratch path)."""
    args, kept = sys.argv[1:], []
    while args:
        arg = args.pop(0)
        if arg == "--goals":
            args = args[1:]
        elif not arg.startswith("--goals="):
            kept.append(arg)
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(Path.cwd()) if script.is_relative_to(Path.cwd()) else script
    return shlex.join([".venv/bin/python", str(shown), *kept])


def load_goals(path: Path) -> list[GoalRow]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            if data.get("spread") is not None:
                data["spread"] = tuple(data["spread"])
            rows.append(GoalRow(**data))
    return rows


def format_table(rows: list[GoalRow]) -> str:
    """A Markdown table (readable as plain text too): goal | median (min..max) | target | verdict."""
    header = ("goal", "value (min..max)", "target", "verdict")
    cells = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
