"""`movie-platform doctor`: one line per configured service, never a traceback.

Each check talks to the real service with a short timeout and turns a failure
into a sentence that names the service, the URL (secrets redacted) and what to do.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from movie_assets.settings import Settings, redact_text, redact_url

TIMEOUT_S = 5


@dataclass(frozen=True)
class CheckResult:
    service: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.service:<12} {self.detail}"


def not_set(var: str) -> str:
    return f'{var} is not set: run `movie-platform up` and `eval "$(movie-platform env)"`, or set {var}'


def configured(value: str | None, var: str) -> str:
    """The setting a check needs; `run_checks` skips unset services, a direct call gets this sentence."""
    if not value:
        raise ValueError(not_set(var))
    return value


def check_postgres(settings: Settings) -> str:
    import psycopg

    url = configured(settings.db_url, "MOVIE_DB_URL")
    with psycopg.connect(url, connect_timeout=TIMEOUT_S) as conn:
        row = conn.execute("show server_version").fetchone()
    assert row is not None, "SHOW always returns one row"
    return f"PostgreSQL {row[0]} at {redact_url(url)} (schema {settings.db_schema})"


def check_redis(settings: Settings) -> str:
    import redis

    url = configured(settings.redis_url, "MOVIE_REDIS_URL")
    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    # redis-py annotates sync and async replies alike (Awaitable | Any); the sync client returns a dict.
    version = client.info("server")["redis_version"]  # type: ignore[index]
    return f"Redis {version} at {redact_url(url)}"


def check_object_store(settings: Settings) -> str:
    from movie_assets.resources.object_store import object_root_for, write_atomically

    probe = object_root_for(settings) / ".doctor" / f"{uuid.uuid4().hex}.txt"
    write_atomically(probe, b"ok")
    assert probe.read_text() == "ok", "read back a different object than was written"
    probe.unlink()
    where = f" via {settings.s3_endpoint_url}" if settings.s3_endpoint_url else ""
    return f"read/write OK at {redact_url(settings.storage_url)}{where}"


def check_mlflow(settings: Settings) -> str:
    import requests

    url = configured(settings.mlflow_tracking_uri, "MLFLOW_TRACKING_URI")
    response = requests.get(url.rstrip("/") + "/health", timeout=TIMEOUT_S)
    response.raise_for_status()
    return f"tracking server healthy at {redact_url(url)}"


# service -> (env var that configures it, the check, what to do when it fails)
CHECKS: dict[str, tuple[str, Callable[[Settings], str], str]] = {
    "postgres": ("MOVIE_DB_URL", check_postgres, "start it with `movie-platform up` or fix MOVIE_DB_URL"),
    "redis": ("MOVIE_REDIS_URL", check_redis, "start it with `movie-platform up` or fix MOVIE_REDIS_URL"),
    "objectstore": (
        "MOVIE_STORAGE_URL",
        check_object_store,
        "check MOVIE_STORAGE_URL, MOVIE_S3_ENDPOINT_URL and the AWS_* credentials",
    ),
    "mlflow": ("MLFLOW_TRACKING_URI", check_mlflow, "start it with `movie-platform up` or fix MLFLOW_TRACKING_URI"),
}
SETTING_OF = {
    "postgres": "db_url",
    "redis": "redis_url",
    "objectstore": "storage_url",
    "mlflow": "mlflow_tracking_uri",
}


def run_checks(settings: Settings) -> list[CheckResult]:
    results = []
    for service, (var, check, remedy) in CHECKS.items():
        if not getattr(settings, SETTING_OF[service]):
            results.append(CheckResult(service, False, not_set(var)))
            continue
        try:
            results.append(CheckResult(service, True, check(settings)))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
            reason = redact_text(_first_line(exc))
            results.append(
                CheckResult(
                    service,
                    False,
                    f"unreachable at {redact_url(getattr(settings, SETTING_OF[service]))}: {reason} -> {remedy}",
                )
            )
    results.append(check_tmdb(settings))
    return results


def check_tmdb(settings: Settings) -> CheckResult:
    """The sample needs nothing; the API gets one authenticated request (GET /configuration)."""
    if settings.tmdb_source != "api":
        return CheckResult(
            "tmdb",
            True,
            "sample source (deterministic, offline); set TMDB_API_KEY or TMDB_READ_ACCESS_TOKEN to crawl the real API",
        )
    import requests

    key, token = os.environ.get("TMDB_API_KEY"), os.environ.get("TMDB_READ_ACCESS_TOKEN")
    try:
        response = requests.get(
            settings.tmdb_base_url.rstrip("/") + "/configuration",
            timeout=TIMEOUT_S,
            params={"api_key": key} if key and not token else None,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
    except requests.RequestException as exc:
        return CheckResult(
            "tmdb",
            False,
            f"unreachable at {settings.tmdb_base_url}: {type(exc).__name__} -> check TMDB_BASE_URL and the network",
        )
    if response.status_code == 401:
        return CheckResult(
            "tmdb",
            False,
            f"TMDB at {settings.tmdb_base_url} refused the credentials (401) -> set a valid TMDB_API_KEY or "
            "TMDB_READ_ACCESS_TOKEN",
        )
    if response.status_code != 200:
        return CheckResult(
            "tmdb", False, f"TMDB at {settings.tmdb_base_url} answered {response.status_code} -> check TMDB_BASE_URL"
        )
    return CheckResult("tmdb", True, f"TMDB API at {settings.tmdb_base_url}, credentials accepted")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
