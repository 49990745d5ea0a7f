"""Movie data & ML platform on Dagster (`dagster ... -m movie_assets`).

`defs` is imported on first access, so `movie-platform status/env/doctor` start in a
fraction of a second instead of loading Feast, MLflow and XGBoost first.
"""


def __getattr__(name: str):
    if name == "defs":
        from movie_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'movie_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])
