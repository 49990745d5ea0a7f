"""Pure movie logic: TMDB records, cleaning, EDA, feature engineering and training, in pandas.

Nothing here imports Dagster or the rest of the code location (a test checks it), so
every rule can be read, reused and tested as a plain function.
"""
