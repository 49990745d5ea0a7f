"""Preparation: cleaned movies and EDA statistics in PostgreSQL, the report and plots in the UI."""

import base64
import collections
import datetime as dt
from importlib import resources

import dagster as dg
import pandas as pd
from psycopg import sql

from movie_assets.domain import clock
from movie_assets.domain.cleaning import CLEAN_COLUMNS, DROP_COLUMNS, GENRE_COLUMNS, clean_movies, genre_rows
from movie_assets.domain.eda import EDA_COLUMNS, eda_stats_frame, report_plots, summary_markdown
from movie_assets.domain.movie_records import RAW_COLUMNS
from movie_assets.object_layout import EDA_PLOT_PATH, EDA_PREFIX, EDA_REPORT_PATH
from movie_assets.partitions import add_months, monthly_asset, partition_window
from movie_assets.resources.object_store import ObjectStore, write_atomically
from movie_assets.resources.postgres import PostgresDatabase, TableRows, WithSideTables, copy_frame, table_schema

EDA_HISTORY_COLUMNS = {**EDA_COLUMNS, "run_id": "text", "computed_at": "timestamp with time zone"}
REPORT_MONTHS = 24
CLEANING_RULES = """| rule | why |
|---|---|
| `zero_means_unknown` | TMDB writes an unknown budget, revenue or runtime as 0: NULL instead |
| `rating_needs_votes` | an average of zero votes is no rating: NULL |
| `normalize_language` | lower-case ISO 639-1 codes, blank = NULL |
| `tidy_text` | collapse whitespace in titles and overviews |
| `genre_names` | names from TMDB's genre list, so names agree with ids |
| `explain_drops` | adult titles and unreleased movies leave, counted per reason |"""


@monthly_asset(
    io_manager_key="postgres_io_manager",
    group_name="preparation",
    kinds={"postgres", "pandas"},
    metadata={"dagster/column_schema": table_schema(CLEAN_COLUMNS), "partition_expr": "release_month"},
    # Everything but the raw TMDB document: cleaning reads typed columns only, and the payload is most of the bytes.
    ins={"movies_raw": dg.AssetIn(metadata={"columns": [name for name in RAW_COLUMNS if name != "payload"]})},
)
def movies_clean(context: dg.AssetExecutionContext, movies_raw: pd.DataFrame):
    """One typed, normalized row per released movie; genres also as the long table `movie_genres`.

    Rows that leave (adult titles, unreleased movies) are kept with their reason in
    `movies_clean_dropped`, so raw = clean + dropped holds for every partition.
    """
    clean, dropped = clean_movies(movies_raw)
    reasons = collections.Counter(dropped["reason"])
    context.log.info(f"{len(movies_raw)} raw -> {len(clean)} clean, {len(dropped)} dropped {dict(reasons)}")
    sides = [
        TableRows("movie_genres", GENRE_COLUMNS, genre_rows(clean)),
        TableRows("movies_clean_dropped", DROP_COLUMNS, dropped),
    ]
    yield dg.Output(
        WithSideTables(clean, sides),  # one transaction: raw = clean + dropped holds after any failure
        metadata={
            "raw_rows": len(movies_raw),
            "rows": len(clean),
            "dropped": len(dropped),
            "drop_reasons": dg.MetadataValue.md(
                pd.DataFrame(reasons.most_common(), columns=["reason", "rows"]).to_markdown(index=False)
            )
            if reasons
            else "none",
            "cleaning_rules": dg.MetadataValue.md(CLEANING_RULES),
            "preview": dg.MetadataValue.md(clean.head(10).to_markdown(index=False)),
        },
    )


@monthly_asset(
    io_manager_key="postgres_io_manager",
    group_name="preparation",
    kinds={"postgres", "pandas"},
    metadata={
        "dagster/column_schema": table_schema(EDA_COLUMNS),
        "partition_expr": "release_month",
        "report_path": EDA_PREFIX + "/",
    },
)
def eda_stats(
    context: dg.AssetExecutionContext, movies_clean: pd.DataFrame, database: PostgresDatabase, object_store: ObjectStore
):
    """Per-month statistics (count, missing ratio, mean, std, min, quartiles, max, top-k, genre counts).

    Each materialization is also appended to `eda_stats_history`, which the view
    `eda_month_comparison` compares with the one before. The report (a summary table
    and four plots over the 24 months up to the run's last partition) is stored once per
    run: the PNGs in the object store (`EDA_PLOT_PATH`), and summary and plots as metadata of
    the last partition's materialization only, the one the UI shows as the latest. Copied to
    every partition, the same ~100 kB of base64 PNGs made a 24-month run add megabytes to the
    event log; the other partitions name where the report is.
    """
    window = partition_window(context)
    stats = eda_stats_frame(movies_clean)
    run_id = context.run.run_id
    history = stats.assign(run_id=run_id, computed_at=clock.now())
    with database.connect("recording EDA history") as conn:
        database.ensure_table(conn, "eda_stats_history", EDA_HISTORY_COLUMNS, "release_month")
        conn.execute(sql.SQL("delete from {} where run_id = %s").format(database.ident("eda_stats_history")), (run_id,))
        copy_frame(conn, database.ident("eda_stats_history"), EDA_HISTORY_COLUMNS, history)
    ensure_views(database)

    report_end = report_window_end(database, window[1])
    report_start = add_months(report_end, -REPORT_MONTHS)
    report_data = database.read_rows("movies_clean", CLEAN_COLUMNS, "release_month", (report_start, report_end))
    report_until = f"{(report_end - dt.timedelta(days=1)):%Y-%m}"
    folder = object_store.root / EDA_REPORT_PATH.format(report_until=report_until)
    images = []
    for name, png in report_plots(report_data).items():
        write_atomically(object_store.root / EDA_PLOT_PATH.format(report_until=report_until, plot=name), png)
        images.append(
            f"**{name[:-4].replace('_', ' ')}**\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
        )
    context.log.info(f"{len(stats)} statistics for {stats['release_month'].nunique()} months; report in {folder}/")
    last = context.partition_keys[-1]
    context.add_asset_metadata(
        {
            "report_window": f"{report_start:%Y-%m}..{report_until} (the {REPORT_MONTHS} months up to the newest "
            "stored; every month's statistics: table eda_stats)",
            "report_movies": len(report_data),
            "summary": dg.MetadataValue.md(summary_markdown(report_data)),
            "plots": dg.MetadataValue.md("\n\n".join(images)),
        },
        partition_key=last,
    )
    return dg.Output(
        stats,
        metadata={
            "rows": len(stats),
            "months": int(stats["release_month"].nunique()),
            "report": f"summary and plots on this run's {last} materialization (the latest)",
            "plots_path": dg.MetadataValue.path(str(folder)),
        },
    )


def report_window_end(database: PostgresDatabase, run_end: dt.date) -> dt.date:
    """The end of the report's months: after the newest month stored, whatever range this run had.

    A backfill of old months once narrowed "the latest" report to the months up to its own last one
    (after a 3-month backfill it described 5 of the 24 months stored).
    """
    with database.connect("finding the newest clean month") as conn:
        query = sql.SQL("select max(release_month) from {}").format(database.ident("movies_clean"))
        row = conn.execute(query).fetchone()
    newest = row[0] if row and row[0] else None
    return max(run_end, add_months(newest, 1)) if newest else run_end


def ensure_views(database: PostgresDatabase) -> None:
    """Create or replace the platform's SQL views (idempotent)."""
    text = resources.files("movie_assets.sql").joinpath("views.sql").read_text()
    with database.connect("creating views") as conn:
        schema = sql.Identifier(database.db_schema).as_string(conn)
        conn.execute(text.replace("{schema}", schema))
