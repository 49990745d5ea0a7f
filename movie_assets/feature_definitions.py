"""The Feast objects of `feature_repo/`: one definition, shared by the Feast CLI and the Dagster assets.

`feature_repo/movie_features.py` builds them from the environment for `feast apply`;
the `feast_definitions` asset builds them from its resource config. A new model
version that needs other features gets a new FeatureService (`movie_rating_v2`),
so training and serving always agree on which features a model used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import warnings

from movie_assets.domain.feature_engineering import FLOAT_FEATURES, INT_FEATURES
from movie_assets.object_layout import FEATURES_PREFIX

# Four of Feast's modules run `warnings.simplefilter("once", DeprecationWarning)` on import, which
# turns on every library's DeprecationWarning in any process that loads this code location: the
# code server printed Dagster's own deprecations (ScheduleDefinition.environment_vars read by its
# schedule snapshot, InitResourceContext.dagster_run read by its nested-resource setup) into the
# `make dev` console and every run's log. catch_warnings puts the filters back as they were.
with warnings.catch_warnings():
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Float64, Int64

# No TTL (Feast: 0 = none): a row holds from its event time until a newer row of the movie replaces it,
# however old it is. A TTL would silently drop movies that no sync touched for a while.
FEATURE_VIEW_TTL = dt.timedelta(0)
FEATURE_SERVICE = "movie_rating_v1"


def features_path(storage_url: str) -> str:
    """The Parquet dataset Feast reads: `s3://bucket/...` as is, a `file://` root as a plain path.

    Feast mangles file:// URIs.
    """
    root = storage_url.rstrip("/")
    if root.startswith("file://"):
        root = root[len("file://") :]
    return f"{root}/{FEATURES_PREFIX}/"


def build_definitions(storage_url: str, s3_endpoint_url: str | None = None) -> dict:
    movie = Entity(name="movie", join_keys=["movie_id"], value_type=ValueType.INT64, description="a TMDB movie")
    source = FileSource(
        name="movie_features_source",
        path=features_path(storage_url),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        file_format=ParquetFormat(),
        s3_endpoint_override=s3_endpoint_url or None,
        description="movie_features Parquet, one folder per release month, written by the movie_features asset",
    )
    view = FeatureView(
        name="movie_features",
        entities=[movie],
        ttl=FEATURE_VIEW_TTL,
        schema=[Field(name=name, dtype=Float64) for name in FLOAT_FEATURES]
        + [Field(name=name, dtype=Int64) for name in INT_FEATURES],
        online=True,
        source=source,
        description="engineered movie features (no target-derived values)",
    )
    service = FeatureService(
        name=FEATURE_SERVICE, features=[view], description="features of the movie_rating_xgb model, v1"
    )
    return {"movie": movie, "movie_features_source": source, "movie_features": view, "movie_rating_v1": service}


def definitions_version() -> str:
    """A version that changes with a feature, its type, the TTL, the entity or the service, not with the storage root.

    It is `feast_definitions`' code version, so automation re-applies the definitions when they change.
    """
    objects = build_definitions("file:///version")
    view, service = objects["movie_features"], objects[FEATURE_SERVICE]
    spec = {
        "view": view.name,
        "ttl_s": view.ttl.total_seconds() if view.ttl else None,
        "features": [(f.name, str(f.dtype)) for f in view.features],
        "entities": sorted(view.entities),
        "service": service.name,
        "service_views": sorted(p.name for p in service.feature_view_projections),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


# Bump when build_features computes a feature differently under the same name and type.
FEATURE_LOGIC_VERSION = 2  # 2: release_days replaced age_days (time-invariant features, issue 26)


def feature_rows_version() -> str:
    """`movie_features`' code version: the feature names, their types and the logic version.

    A month stored under another version is rebuilt by automation (a new feature would be
    missing from its Parquet, and Feast and online_features read every month).
    """
    view = build_definitions("file:///version")["movie_features"]
    spec = {"logic": FEATURE_LOGIC_VERSION, "features": [(f.name, str(f.dtype)) for f in view.features]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
