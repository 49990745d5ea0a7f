"""Connection settings read from the environment, shared by the CLI, resources and notebooks.

One place knows the env var names of the design contract and their defaults, so no
module (or notebook) copies connection code. Settings only read; resources are
built from them in `resources/`. Secrets are redacted before anything is printed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

S3_TEST_BUCKET = "movie-platform"
DEFAULT_TMDB_BASE_URL = "https://api.themoviedb.org/3"
DEFAULT_PARTITION_START = "1990-01-01"  # with the API; the sample starts at its first month


class SettingError(ValueError):
    """A variable's value the platform cannot use: the message names the variable and what it expects."""


def port_setting(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """A TCP port from `name`, or `default` when unset."""
    raw = (os.environ if env is None else env).get(name) or ""
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise SettingError(f"{name}={raw!r} is no TCP port: give a number from 1 to 65535 (default {default})")
    return int(raw)


def month_setting(name: str, raw: str | None) -> str | None:
    """A month as its first day in ISO form (`1990-01-01`), the form partition keys take; None when unset."""
    if not raw:
        return None
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        day = None
    if day is None or day.day != 1 or len(raw) != 10:
        raise SettingError(f"{name}={raw!r} is no month: give its first day as YYYY-MM-01, like 1990-01-01")
    return raw


@dataclass(frozen=True)
class Settings:
    db_url: str | None
    db_schema: str
    redis_url: str | None
    storage_url: str | None
    s3_endpoint_url: str | None
    mlflow_tracking_uri: str | None
    tmdb_base_url: str
    tmdb_source: str
    partition_start: str | None  # MOVIE_PARTITION_START; None: the source's own (partitions.release_months)
    feast_project: str | None = None  # None: the project in feature_repo/feature_store.yaml
    mlflow_experiment: str = "movie_rating"
    model_name: str = "movie_rating_xgb"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_region: str | None = None
    aws_session_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source: Mapping[str, str] = os.environ if env is None else env
        has_tmdb_credentials = bool(source.get("TMDB_API_KEY") or source.get("TMDB_READ_ACCESS_TOKEN"))
        return cls(
            db_url=source.get("MOVIE_DB_URL") or None,
            db_schema=source.get("MOVIE_DB_SCHEMA") or "public",
            redis_url=source.get("MOVIE_REDIS_URL") or None,
            storage_url=source.get("MOVIE_STORAGE_URL") or None,
            s3_endpoint_url=source.get("MOVIE_S3_ENDPOINT_URL") or None,
            mlflow_tracking_uri=source.get("MLFLOW_TRACKING_URI") or None,
            tmdb_base_url=source.get("TMDB_BASE_URL") or DEFAULT_TMDB_BASE_URL,
            tmdb_source=source.get("TMDB_SOURCE") or ("api" if has_tmdb_credentials else "sample"),
            partition_start=month_setting("MOVIE_PARTITION_START", source.get("MOVIE_PARTITION_START")),
            feast_project=source.get("MOVIE_FEAST_PROJECT") or None,
            mlflow_experiment=source.get("MOVIE_MLFLOW_EXPERIMENT") or "movie_rating",
            model_name=source.get("MOVIE_MODEL_NAME") or "movie_rating_xgb",
            aws_access_key_id=source.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=source.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_region=source.get("AWS_DEFAULT_REGION") or None,
            aws_session_token=source.get("AWS_SESSION_TOKEN") or None,
        )


def database_url(url: str, database: str) -> str:
    """The same server URL pointing at another database (data, dagster, mlflow live side by side)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def dagster_storage_url(url: str) -> str:
    """SQLAlchemy URL for Dagster/MLflow storage.

    With a bare ``postgresql://`` SQLAlchemy 2 picks psycopg 3, and Dagster runs then
    fail on ``NOTIFY run_events, $1`` and stay NOT_STARTED; psycopg2 is what they expect.
    """
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg2://", url)


SECRET_NAME = re.compile(r"(?i)(secret|password|token|api_key|access_key)")


def redact_text(text: str) -> str:
    """Hide credentials anywhere in free text (error messages quote URLs and DSNs)."""
    text = re.sub(r"(//[^/\s:@]*:)[^@\s/]+@", r"\1***@", text)
    text = re.sub(r"(?i)(api_key|access_token|password|secret)=[^&\s]*", r"\1=***", text)
    return re.sub(r"(?i)(Bearer\s+)\S+", r"\1***", text)


def redact_env_value(name: str, value: str) -> str:
    """For printing an env var: secrets masked, URLs without their passwords."""
    if SECRET_NAME.search(name):
        return "***"
    return redact_url(value) if "://" in value else value


def redact_url(url: str | None) -> str:
    """Hide passwords and API keys/tokens in a URL before it reaches a log or an error."""
    if not url:
        return ""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = re.sub(r"(?i)(api_key|access_token|token|password|secret)=[^&]*", r"\1=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
