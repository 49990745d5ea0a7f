"""Training the rating model: Feast training set, time-based holdout, XGBoost vs baselines.

Plain functions over DataFrames; the asset in `assets/training.py` adds MLflow and Dagster.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from movie_assets.domain.feature_engineering import FEATURE_NAMES
from movie_assets.domain.plots import render_png
from movie_assets.domain.point_in_time import historical_features

TARGET = "vote_average"


@dataclass
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_months: list[str]


def labelled_movies(clean: pd.DataFrame, min_votes: int) -> pd.DataFrame:
    """Movies whose average rests on enough votes to be a label worth learning."""
    votes = pd.to_numeric(clean["vote_count"], errors="coerce").fillna(0)
    rated = clean[(votes >= min_votes) & clean[TARGET].notna()]
    return pd.DataFrame(
        {
            "movie_id": rated["movie_id"].astype("int64").to_numpy(),
            "release_month": pd.to_datetime(rated["release_month"]).dt.strftime("%Y-%m").to_numpy(),
            TARGET: pd.to_numeric(rated[TARGET]).astype("float64").to_numpy(),
        }
    )


def training_set(store, labels: pd.DataFrame, feature_service: str, as_of: dt.datetime) -> pd.DataFrame:
    """Labels joined point-in-time with the feature service as of `as_of` (Feast's join, not ours)."""
    entity_df = labels[["movie_id"]].assign(event_timestamp=pd.Timestamp(as_of))
    features = historical_features(store, entity_df, feature_service)
    joined = labels.merge(features.drop(columns=["event_timestamp"]), on="movie_id", how="inner")
    # A movie without a feature row at or before `as_of` comes back all-NaN: no features, not zeros. (No TTL:
    # a row however old still counts, so the training set does not shrink as time passes.)
    joined = joined[joined[FEATURE_NAMES].notna().any(axis=1)].reset_index(drop=True)
    if joined.empty:
        raise ValueError(
            f"Feast returned no features for {len(labels)} labelled movies as of {as_of:%Y-%m-%d %H:%M}: "
            "materialize movie_features (and feast_definitions) for these months first"
        )
    return joined


def split_by_time(frame: pd.DataFrame, holdout_months: int) -> Split:
    """Train on older release months, hold out the newest ones: the model is judged on the future."""
    months = sorted(frame["release_month"].unique())
    if len(months) <= holdout_months:
        raise ValueError(
            f"need more than {holdout_months} release months to hold some out, got {len(months)}: {months}"
        )
    held = months[-holdout_months:]
    holdout = frame["release_month"].isin(held)
    return Split(frame[~holdout].reset_index(drop=True), frame[holdout].reset_index(drop=True), held)


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[FEATURE_NAMES].astype("float64")


def metrics(truth, predicted, prefix: str = "") -> dict[str, float]:
    # scikit-learn (like XGBoost) is imported where it is used: the code location imports this module on every load.
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        f"{prefix}rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
        f"{prefix}mae": float(mean_absolute_error(truth, predicted)),
        f"{prefix}r2": float(r2_score(truth, predicted)),
    }


def train_xgboost(train: pd.DataFrame, params: dict):
    from xgboost import XGBRegressor

    model = XGBRegressor(objective="reg:squarederror", n_jobs=2, **params)
    model.fit(features_of(train), train[TARGET])
    return model


def baselines(split: Split) -> dict[str, float]:
    """The mean rating (the bar to clear) and a linear model on the same features."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mean = np.full(len(split.holdout), split.train[TARGET].mean())
    fill = features_of(split.train).median()
    linear = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    linear.fit(features_of(split.train).fillna(fill), split.train[TARGET])
    linear_predictions = linear.predict(features_of(split.holdout).fillna(fill))
    return {
        **metrics(split.holdout[TARGET], mean, "baseline_"),
        **metrics(split.holdout[TARGET], linear_predictions, "linear_"),
    }


@dataclass(frozen=True)
class LinearComparison:
    """XGBoost against the ridge baseline on the same holdout.

    The ridge is a diagnostic: it says when trees add nothing over a linear fit (the sample's ratings
    are nearly additive in the features), but it is neither registered nor served.
    """

    rmse: float
    linear_rmse: float

    @classmethod
    def of(cls, scores: dict[str, float]) -> LinearComparison:
        return cls(rmse=scores["rmse"], linear_rmse=scores["linear_rmse"])

    @property
    def margin(self) -> float:
        """How much lower XGBoost's RMSE is than the ridge's (negative: the ridge wins)."""
        return self.linear_rmse - self.rmse

    @property
    def xgboost_wins(self) -> bool:
        return self.rmse <= self.linear_rmse

    def summary(self) -> str:
        if self.xgboost_wins:
            return f"XGBoost rmse {self.rmse:.4f} <= ridge {self.linear_rmse:.4f} (margin {self.margin:.4f})"
        return (
            f"the ridge baseline beats XGBoost: rmse {self.linear_rmse:.4f} < {self.rmse:.4f} "
            f"(by {-self.margin:.4f}); the trees add nothing over a linear fit on this holdout"
        )


def importance_plot(model, top: int = 20) -> bytes:
    gains = pd.Series(model.get_booster().get_score(importance_type="gain")).sort_values().tail(top)
    return render_png(
        lambda ax: ax.barh(gains.index, gains.values, color="#4C72B0"), "Feature importance (gain)", size=(7, 6)
    )
