"""Feast's point-in-time join, without the warning dask prints on every retrieval.

Its own module, free of matplotlib (domain.plots switches to the Agg backend on import), so that
notebooks can share the filter without losing their inline plots.
"""

from __future__ import annotations

import warnings

import pandas as pd


def ignore_dask_downcasting() -> None:
    """Filter the FutureWarning dask raises once per Feast point-in-time join (it bfills an object column).

    The libraries' business, nothing we can pass differently; filtered by category, message and module only.
    """
    warnings.filterwarnings(
        "ignore",
        message="Downcasting object dtype arrays on .fillna",
        category=FutureWarning,
        module=r"dask\.dataframe\.dask_expr\._shuffle",
    )


def historical_features(store, entity_df: pd.DataFrame, feature_service: str) -> pd.DataFrame:
    """Feast's point-in-time join of `entity_df` with the feature service, without dask's downcasting warning."""
    with warnings.catch_warnings():
        ignore_dask_downcasting()
        return store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service(feature_service)
        ).to_df()
