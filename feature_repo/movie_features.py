"""Feast definitions for the CLI (`feast apply`): built from MOVIE_STORAGE_URL / MOVIE_S3_ENDPOINT_URL.

The objects themselves are defined once in `movie_assets.feature_definitions`, which
the Dagster assets use too. The Project object names the YAML's project: without one,
every `feast apply`/`feast plan` prints "No project found in the repository".
"""

import os
from pathlib import Path

import yaml
from feast import Project

from movie_assets.feature_definitions import build_definitions

_definitions = build_definitions(os.environ["MOVIE_STORAGE_URL"], os.environ.get("MOVIE_S3_ENDPOINT_URL"))
movie = _definitions["movie"]
movie_features_source = _definitions["movie_features_source"]
movie_features = _definitions["movie_features"]
movie_rating_v1 = _definitions["movie_rating_v1"]
project = Project(
    name=yaml.safe_load(Path(__file__).with_name("feature_store.yaml").read_text())["project"],
    description="movie ratings: TMDB features for the movie_rating_xgb model",
)
