"""Serving reads: online features from Redis and champion scores, for any process that serves them.

The CLI (`movie-platform features` / `predict`) prints these; a serving process can
import them without the CLI, and the assets' own check reads Redis the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.resources.online_writer import read_latest

FEATURE_VIEW = "movie_features"


class NoChampionError(RuntimeError):
    """The registry has no `champion` version yet: nothing can be scored."""


@dataclass(frozen=True)
class Predictions:
    """Scores of the movies that have online features, and the ids that have none."""

    scores: pd.Series  # predicted vote average, indexed by movie_id
    model_name: str
    model_version: str
    absent: list[int]


def online_feature_rows(feast: FeastStore, movie_ids: list[int]) -> pd.DataFrame:
    """The online (Redis) features of the movies, as a frame indexed by movie_id (NaN rows = not online)."""
    store = feast.store()
    return read_latest(store, store.get_feature_view(FEATURE_VIEW), movie_ids)


def absent_ids(frame: pd.DataFrame, movie_ids: list[int]) -> list[int]:
    """The asked ids with no online values (never materialized, or their keys expired)."""
    return [i for i in movie_ids if frame.loc[i, FEATURE_NAMES].isna().all()]


def predict(feast: FeastStore, tracking: MlflowTracking, movie_ids: list[int]) -> Predictions:
    """The champion model's rating for movies, from their online features."""
    champion = tracking.champion()
    if champion is None:
        raise NoChampionError(
            f"no `champion` version of {tracking.registered_model} in MLflow yet: materialize movie_rating_model"
        )
    model = tracking.load_xgboost(champion.version)
    frame = online_feature_rows(feast, movie_ids)
    absent = absent_ids(frame, movie_ids)
    online = frame.drop(index=absent)
    values = model.predict(online[FEATURE_NAMES].astype("float64")) if len(online) else []
    return Predictions(
        pd.Series(values, index=online.index, dtype="float64"), tracking.registered_model, str(champion.version), absent
    )
