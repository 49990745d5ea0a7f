"""The release months the offline TMDB sample covers.

One source for the sample catalogue (`resources/tmdb_sample.py`) and the partitions
under `TMDB_SOURCE=sample` (`partitions.py`), so the UI shows only months with data.
"""

import datetime as dt

SAMPLE_START = dt.date(2023, 1, 1)  # first day of the sample's first release month
SAMPLE_MONTHS = 24  # 2023-01 .. 2024-12
