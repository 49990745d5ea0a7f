"""The Feast objects of `feature_repo/`: one definition, shared by the Feast CLI and the Dagster assets.

`feature_repo/movie_features.py` builds them from the environment for `feast apply`;
the `feast_definitions` asset builds them from its resource config. A new model
version that needs other features gets a new FeatureService (`movie_rating_v2`),
so training and serving always agree on which features a model used.

Feast is imported by `build_definitions` only: the code versions below are hashed from the
plain spec the objects are built from, so loading the code location (every run, code server
and CLI call) does not import Feast, which alone takes seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import warnings
from types import ModuleType

from movie_assets.domain.feature_engineering import FLOAT_FEATURES, INT_FEATURES
from movie_assets.object_layout import FEATURES_PREFIX

# No TTL (Feast: 0 = none): a row holds from its event time until a newer row of the movie replaces it,
# however old it is. A TTL would silently drop movies that no sync touched for a while.
FEATURE_VIEW_TTL = dt.timedelta(0)
FEATURE_SERVICE = "movie_rating_v1"
ENTITY, JOIN_KEY, FEATURE_VIEW = "movie", "movie_id", "movie_features"


def feature_schema() -> list[tuple[str, str]]:
    """The view's features and their Feast types (`feast.types` names), in the view's order."""
    return [(name, "Float64") for name in FLOAT_FEATURES] + [(name, "Int64") for name in INT_FEATURES]


def import_feast() -> ModuleType:
    """`import feast`, keeping the process's warning filters: every Feast import goes through here first.

    Two of Feast's modules run `warnings.simplefilter("once", DeprecationWarning)` when imported, which
    turns on every library's DeprecationWarning in the process that imports Feast: Dagster's own
    deprecations (ScheduleDefinition.environment_vars read by its schedule snapshot,
    InitResourceContext.dagster_run read by its nested-resource setup) then filled the `make dev`
    console and run logs. catch_warnings puts the filters back as they were.
    """
    with warnings.catch_warnings():
        import feast

    return feast


def features_path(storage_url: str) -> str:
    """The Parquet dataset Feast reads: `s3://bucket/...` as is, a `file://` root as a plain path.

    Feast mangles file:// URIs.
    """
    root = storage_url.rstrip("/")
    if root.startswith("file://"):
        root = root[len("file://") :]
    return f"{root}/{FEATURES_PREFIX}/"


def build_definitions(storage_url: str, s3_endpoint_url: str | None = None) -> dict:
    import_feast()
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType, types
    from feast.data_format import ParquetFormat

    movie = Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.INT64, description="a TMDB movie")
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
        name=FEATURE_VIEW,
        entities=[movie],
        ttl=FEATURE_VIEW_TTL,
        schema=[Field(name=name, dtype=getattr(types, dtype)) for name, dtype in feature_schema()],
        online=True,
        source=source,
        description="engineered movie features (no target-derived values)",
    )
    service = FeatureService(
        name=FEATURE_SERVICE, features=[view], description="features of the movie_rating_xgb model, v1"
    )
    return {ENTITY: movie, "movie_features_source": source, FEATURE_VIEW: view, FEATURE_SERVICE: service}


def definitions_version() -> str:
    """A version that changes with a feature, its type, the TTL, the entity or the service, not with the storage root.

    It is `feast_definitions`' code version, so automation re-applies the definitions when they change.
    `code/test_code_location_load.py` checks it equals the hash of the built Feast objects' spec.
    """
    spec = {
        "view": FEATURE_VIEW,
        "ttl_s": FEATURE_VIEW_TTL.total_seconds() or None,  # Feast: 0 = no TTL
        "features": feature_schema(),
        "entities": [ENTITY],
        "service": FEATURE_SERVICE,
        "service_views": [FEATURE_VIEW],
    }
    return _hash(spec)


# Bump when build_features computes a feature differently under the same name and type.
FEATURE_LOGIC_VERSION = 2  # 2: release_days replaced age_days (time-invariant features, issue 26)


def feature_rows_version() -> str:
    """`movie_features`' code version: the feature names, their types and the logic version.

    A month stored under another version is rebuilt by automation (a new feature would be
    missing from its Parquet, and Feast and online_features read every month).
    """
    return _hash({"logic": FEATURE_LOGIC_VERSION, "features": feature_schema()})


def _hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
