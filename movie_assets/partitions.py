"""Release-month partitions: every partitioned asset is keyed by TMDB `primary_release_date` month."""
import os

import dagster as dg

release_month_partitions = dg.MonthlyPartitionsDefinition(
    start_date=os.environ.get("MOVIE_PARTITION_START", "1990-01-01"),
    # Include the running month: movies released so far this month are crawlable now.
    end_offset=1,
)
