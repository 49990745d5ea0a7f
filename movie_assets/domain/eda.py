"""EDA results: per-month statistics as a long table, and the report plots.

The long table (`release_month, column_name, stat, label, value`) lets SQL compare
any statistic across months and across materializations without a schema change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movie_assets.domain.plots import render_png

EDA_COLUMNS = {
    "release_month": "date",
    "column_name": "text",
    "stat": "text",
    "label": "text",
    "value": "double precision",
}
NUMERIC = [
    "runtime",
    "budget",
    "revenue",
    "vote_average",
    "vote_count",
    "popularity",
    "overview_length",
    "title_length",
]
CATEGORICAL = ["original_language", "status"]
QUANTILES = {"p25": 0.25, "p50": 0.5, "p75": 0.75}
TOP_K = 5


def month_stats(month: pd.DataFrame) -> list[dict]:
    """Every statistic of one release month's clean movies, as long rows (without the month)."""
    rows = [{"column_name": "*", "stat": "rows", "label": None, "value": float(len(month))}]
    for column in NUMERIC:
        values = pd.to_numeric(month[column], errors="coerce").astype("float64")
        present = values.dropna()
        stats = {
            "count": float(len(present)),
            "missing_ratio": float(values.isna().mean()) if len(values) else np.nan,
            "mean": present.mean(),
            "std": present.std(),
            "min": present.min(),
            **{name: present.quantile(q) for name, q in QUANTILES.items()},
            "max": present.max(),
        }
        rows += [
            {"column_name": column, "stat": stat, "label": None, "value": _float(value)}
            for stat, value in stats.items()
        ]
    for column in CATEGORICAL:
        values = month[column].astype("string")
        rows.append(
            {
                "column_name": column,
                "stat": "missing_ratio",
                "label": None,
                "value": float(values.isna().mean()) if len(values) else np.nan,
            }
        )
        for label, count in values.value_counts().head(TOP_K).items():
            rows.append({"column_name": column, "stat": "top_k", "label": str(label), "value": float(count)})
    for genre, count in month["genres"].explode().dropna().value_counts().items():
        rows.append({"column_name": "genres", "stat": "count", "label": str(genre), "value": float(count)})
    return rows


def eda_stats_frame(clean: pd.DataFrame) -> pd.DataFrame:
    """The long statistics table for every release month in `clean`."""
    rows = []
    for month, group in clean.groupby(pd.to_datetime(clean["release_month"]).dt.date, sort=True):
        rows += [{"release_month": month, **row} for row in month_stats(group)]
    return pd.DataFrame(rows, columns=list(EDA_COLUMNS))


def summary_markdown(clean: pd.DataFrame) -> str:
    """A compact table for the UI: one row per numeric column over the whole report window."""
    table = pd.DataFrame(
        {
            column: {
                "missing": f"{pd.to_numeric(clean[column], errors='coerce').isna().mean():.0%}",
                "mean": pd.to_numeric(clean[column], errors="coerce").mean(),
                "p50": pd.to_numeric(clean[column], errors="coerce").median(),
                "max": pd.to_numeric(clean[column], errors="coerce").max(),
            }
            for column in NUMERIC
        }
    ).T
    return table.to_markdown(floatfmt=",.2f")


def report_plots(clean: pd.DataFrame) -> dict[str, bytes]:
    """The four plots of the EDA report as PNG bytes, by file name."""
    plots = {}
    votes = pd.to_numeric(clean["vote_average"], errors="coerce").dropna()
    plots["vote_average_distribution.png"] = render_png(
        lambda ax: ax.hist(votes, bins=40, color="#4C72B0"),
        "Vote average (movies with votes)",
        "vote average",
        "movies",
    )
    per_month = clean.groupby(pd.to_datetime(clean["release_month"]).dt.strftime("%Y-%m")).size()
    plots["movies_per_month.png"] = render_png(
        lambda ax: (ax.bar(per_month.index, per_month.values, color="#55A868"), ax.tick_params(axis="x", rotation=90)),
        "Movies per release month",
        "release month",
        "movies",
    )
    genres = clean["genres"].explode().dropna().value_counts().sort_values()
    plots["genre_counts.png"] = render_png(
        lambda ax: ax.barh(genres.index, genres.values, color="#C44E52"), "Movies per genre", "movies", ""
    )
    money = clean[["budget", "revenue"]].apply(pd.to_numeric, errors="coerce").dropna()
    plots["budget_vs_revenue.png"] = render_png(
        lambda ax: (
            ax.scatter(money["budget"], money["revenue"], s=6, alpha=0.5, color="#8172B2"),
            ax.set_xscale("log"),
            ax.set_yscale("log"),
        ),
        "Budget vs revenue (both known)",
        "budget (USD, log)",
        "revenue (USD, log)",
    )
    return plots


def _float(value) -> float:
    return float(value) if value is not None and not pd.isna(value) else np.nan
