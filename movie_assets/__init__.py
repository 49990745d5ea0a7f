"""Movie data & ML platform on Dagster (`dagster ... -m movie_assets`)."""
from movie_assets.definitions import defs

__all__ = ["defs"]
