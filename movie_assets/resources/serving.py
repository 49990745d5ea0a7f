"""Serving reads: online features from Redis and champion scores, for any process that serves them.

The CLI (`movie-platform features` / `predict`) prints these; `movie-platform serve` keeps a
`ServedModel` per champion version and scores arrays without pandas; the assets' own check reads
Redis the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.mlflow import CHAMPION, MlflowTracking
from movie_assets.resources.online_writer import read_latest

FEATURE_VIEW = "movie_features"


class NoChampionError(RuntimeError):
    """The registry has no `champion` version yet: nothing can be scored."""

    @classmethod
    def of(cls, registered_model: str) -> NoChampionError:
        return cls(
            f"no `champion` version of {registered_model} in MLflow yet: materialize movie_rating_model (a version "
            "becomes champion only when its holdout RMSE is at least 5% below the mean baseline's; its "
            "`champion_decision` says why one did not)"
        )


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
        raise NoChampionError.of(tracking.registered_model)
    model = tracking.load_xgboost(champion.version)
    frame = online_feature_rows(feast, movie_ids)
    absent = absent_ids(frame, movie_ids)
    online = frame.drop(index=absent)
    values = model.predict(online[FEATURE_NAMES].astype("float64")) if len(online) else []
    return Predictions(
        pd.Series(values, index=online.index, dtype="float64"), tracking.registered_model, str(champion.version), absent
    )


def champion_version(tracking: MlflowTracking) -> str | None:
    """The version behind `champion`, or None when there is none yet; other registry errors are raised.

    Unlike `MlflowTracking.champion()`, an unreachable MLflow is not "no champion": a server that
    follows the alias keeps its model through a registry outage.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(tracking.client().get_model_version_by_alias(tracking.registered_model, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # no model / no alias
            return None
        raise


@dataclass(frozen=True)
class ServedModel:
    """One registered version, ready to score rows of online features with XGBoost's `inplace_predict`.

    No DataFrame per request: the sklearn wrapper's `predict` validates and copies a frame, which
    costs more than scoring one movie.
    """

    name: str
    version: str
    booster: Any
    positions: np.ndarray | None  # the model's features among the online columns; None: the same order

    def score(self, values: np.ndarray) -> np.ndarray:
        """Scores of the rows of `values` (float64, one column per online feature, NaN = missing)."""
        rows = values if self.positions is None else values[:, self.positions]
        return np.asarray(self.booster.inplace_predict(rows), dtype="float64").reshape(len(rows))


def served_model(tracking: MlflowTracking, version: str, online_columns: list[str]) -> ServedModel:
    """Load a version and map its features onto the online columns; refuse one that needs a feature not online."""
    model = tracking.load_xgboost(version)
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    booster.set_param({"nthread": 1})  # a few rows per call: threads cost more than they save
    names = list(booster.feature_names or FEATURE_NAMES)
    missing = [name for name in names if name not in online_columns]
    if missing:
        raise ValueError(
            f"{tracking.registered_model} v{version} needs features the online store does not serve: {missing}"
        )
    return ServedModel(tracking.registered_model, version, booster, positions_of(names, online_columns))


def positions_of(names: list[str], columns: list[str]) -> np.ndarray | None:
    """Where `names` sit among `columns`, to pick them from a row array; None when they are `columns` as is."""
    if names == columns:
        return None
    return np.array([columns.index(name) for name in names])
