# One image for every Python service of the compose stack (Dagster, MLflow, JupyterLab).
# .dockerignore keeps .env (the secrets) and the laptop's state out of `COPY . .`.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 DAGSTER_HOME=/opt/dagster/home
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/movie_platform
COPY setup.py README.md ./
COPY movie_assets ./movie_assets
COPY movie_platform ./movie_platform
# [compose]: JupyterLab, and Flask-WTF for MLflow's basic-auth app (`mlflow server --app-name basic-auth`).
RUN pip install -e ".[compose]"
COPY . .
RUN mkdir -p $DAGSTER_HOME && cp dagster.yaml workspace.yaml $DAGSTER_HOME/
