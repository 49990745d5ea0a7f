# One image for every Python service of the compose stack (Dagster, MLflow, JupyterLab).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 DAGSTER_HOME=/opt/dagster/home
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/movie_platform
COPY setup.py README.md ./
COPY movie_assets ./movie_assets
COPY movie_platform ./movie_platform
RUN pip install -e . jupyterlab
COPY . .
RUN mkdir -p $DAGSTER_HOME && cp docker/dagster.yaml workspace.yaml $DAGSTER_HOME/
