"""The object-store layout of the design contract: where each asset's objects live under MOVIE_STORAGE_URL.

One place for the paths, so the asset that writes an object and the job or notebook
that reads it back cannot drift apart. `{release_month}` is `YYYY-MM`.
"""

RAW_BACKUP_PREFIX = "raw/tmdb"
RAW_BACKUP_PATH = RAW_BACKUP_PREFIX + "/release_month={release_month}/movies.jsonl.gz"
FEATURES_PREFIX = "features/movie_features"
FEATURES_OBJECT_PATH = FEATURES_PREFIX + "/release_month={release_month}/part.parquet"
# Earlier materializations of the month, kept beside the current one: Feast reads the folder
# recursively, so a point-in-time join sees every version. `{materialized}` is its event time.
FEATURES_HISTORY_PATH = FEATURES_PREFIX + "/release_month={release_month}/history/materialized={materialized}.parquet"
EDA_PREFIX = "eda"
# The EDA report of one eda_stats run: its four PNG plots over the 24 months up to the run's last
# month `{report_until}` (YYYY-MM), written once per run; `{plot}` is the file name
# (vote_average_distribution.png, movies_per_month.png, genre_counts.png, budget_vs_revenue.png).
EDA_REPORT_PATH = EDA_PREFIX + "/report_until={report_until}"
EDA_PLOT_PATH = EDA_REPORT_PATH + "/{plot}"
