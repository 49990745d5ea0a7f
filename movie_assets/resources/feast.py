"""Feast as a Dagster resource: the same store the `feature_repo/` CLI sees, configured from MOVIE_* settings.

Registry: SQL, in the PostgreSQL database `feast` (shared by every process).
Offline store: the movie_features Parquet under MOVIE_STORAGE_URL. Online store: Redis.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dagster as dg
import yaml
from pydantic import Field

from movie_assets.feature_definitions import import_feast
from movie_assets.settings import dagster_storage_url, database_url

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
# feature_store.yaml is the one source of what the Feast CLI and the assets share: the code
# reads project, key TTL (none by default: keys do not expire) and registry cache TTL from it.
REPO_YAML = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
PROJECT = REPO_YAML["project"]
KEY_TTL_SECONDS: int | None = REPO_YAML["online_store"].get("key_ttl_seconds")
REGISTRY_CACHE_TTL_SECONDS = int(REPO_YAML["registry"]["cache_ttl_seconds"])
# Feast's Redis store with the username and password as fields of their own (resources/feast_private.py).
AUTH_STORE_TYPE = "movie_assets.resources.feast_private.RedisAuthOnlineStore"
FIRST_MATERIALIZATION_START = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def redis_connection_string(url: str) -> str:
    """Feast's `host:port,db=N[,ssl=true]` from a redis:// or rediss:// URL; the credentials go apart (`redis_auth`).

    Feast splits this string on `,` and JSON-decodes its values, so a password with a comma (or
    one that reads as JSON) cannot travel in it: the online store of feast_private takes the
    username and password as fields of their own.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"MOVIE_REDIS_URL must start with redis:// or rediss://, not {parts.scheme or 'nothing'}://")
    db = (parts.path or "/0").lstrip("/") or "0"
    text = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379},db={db}"
    if parts.scheme == "rediss":
        text += ",ssl=true"
    return text


def redis_auth(url: str) -> dict[str, str]:
    """The username and password of a redis:// URL, percent-decoded (absent ones left out)."""
    parts = urlsplit(url)
    return {name: unquote(raw) for name, raw in (("username", parts.username), ("password", parts.password)) if raw}


def registry_url(db_url: str) -> str:
    return dagster_storage_url(database_url(db_url, "feast"))


def feast_env(env: dict[str, str]) -> dict[str, str]:
    """The FEAST_* variables feature_store.yaml reads, derived from the MOVIE_* ones."""
    derived = {}
    if env.get("MOVIE_DB_URL"):
        derived["FEAST_REGISTRY_URL"] = registry_url(env["MOVIE_DB_URL"])
    if env.get("MOVIE_REDIS_URL"):
        derived["FEAST_REDIS_CONNECTION"] = redis_connection_string(env["MOVIE_REDIS_URL"])
        auth = redis_auth(env["MOVIE_REDIS_URL"])
        derived["FEAST_REDIS_USERNAME"] = auth.get("username", "")
        derived["FEAST_REDIS_PASSWORD"] = auth.get("password", "")
    if env.get("MOVIE_S3_ENDPOINT_URL"):
        # `feast apply` validates S3 sources with pyarrow, which ignores s3_endpoint_override.
        derived["AWS_ENDPOINT_URL_S3"] = env["MOVIE_S3_ENDPOINT_URL"]
    return derived


class FeastStore(dg.ConfigurableResource):
    """Builds `feast.FeatureStore` objects for this deployment."""

    db_url: str
    redis_url: str
    storage_url: str
    s3_endpoint_url: str | None = None
    project: str = Field(default=PROJECT, description="Feast project: registry rows and Redis keys are per project")
    key_ttl_seconds: int | None = Field(
        default=KEY_TTL_SECONDS,
        description="upper bound of a Redis key's life; None (the default): keys do not expire",
    )

    @classmethod
    def from_settings(cls, settings) -> FeastStore:
        """The store a `Settings` names (CLI, notebooks); the assets get theirs from wiring.py."""
        return cls(
            db_url=settings.db_url,
            redis_url=settings.redis_url,
            storage_url=settings.storage_url,
            s3_endpoint_url=settings.s3_endpoint_url,
            project=settings.feast_project or PROJECT,
        )

    def repo_config(self):
        import_feast()
        from feast.repo_config import RepoConfig

        return RepoConfig(
            project=self.project,
            provider="local",
            registry={
                "registry_type": "sql",
                "path": registry_url(self.db_url),
                "cache_ttl_seconds": REGISTRY_CACHE_TTL_SECONDS,
            },
            offline_store={"type": "file"},
            online_store={
                "type": AUTH_STORE_TYPE,
                "connection_string": redis_connection_string(self.redis_url),
                **redis_auth(self.redis_url),
                "key_ttl_seconds": self.key_ttl_seconds,
            },
            entity_key_serialization_version=REPO_YAML["entity_key_serialization_version"],
            repo_path=FEATURE_REPO,
        )

    def store(self):
        import_feast()
        from feast import FeatureStore

        return FeatureStore(repo_path=str(FEATURE_REPO), config=self.repo_config())

    def definitions(self) -> dict:
        from movie_assets.feature_definitions import build_definitions

        return build_definitions(self.storage_url, self.s3_endpoint_url)
