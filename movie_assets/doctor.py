"""`movie-platform doctor`: one line per configured service, never a traceback.

Each check talks to the real service with a short timeout and turns a failure
into a sentence that names the service, the URL (secrets redacted) and what to do.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

from movie_assets.settings import Settings, redact_url

TIMEOUT_S = 5


@dataclass(frozen=True)
class CheckResult:
    service: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.service:<12} {self.detail}"


def check_postgres(settings: Settings) -> str:
    import psycopg

    with psycopg.connect(settings.db_url, connect_timeout=TIMEOUT_S) as conn:
        version = conn.execute("show server_version").fetchone()[0]
    return f"PostgreSQL {version} at {redact_url(settings.db_url)} (schema {settings.db_schema})"


def check_redis(settings: Settings) -> str:
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    version = client.info("server")["redis_version"]
    return f"Redis {version} at {redact_url(settings.redis_url)}"


def check_object_store(settings: Settings) -> str:
    probe = settings.object_root() / ".doctor" / f"{uuid.uuid4().hex}.txt"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    assert probe.read_text() == "ok", "read back a different object than was written"
    probe.unlink()
    where = f" via {settings.s3_endpoint_url}" if settings.s3_endpoint_url else ""
    return f"read/write OK at {redact_url(settings.storage_url)}{where}"


def check_mlflow(settings: Settings) -> str:
    import requests

    response = requests.get(settings.mlflow_tracking_uri.rstrip("/") + "/health", timeout=TIMEOUT_S)
    response.raise_for_status()
    return f"tracking server healthy at {redact_url(settings.mlflow_tracking_uri)}"


# service -> (env var that configures it, the check, what to do when it fails)
CHECKS: dict[str, tuple[str, Callable[[Settings], str], str]] = {
    "postgres": ("MOVIE_DB_URL", check_postgres, "start it with `movie-platform up` or fix MOVIE_DB_URL"),
    "redis": ("MOVIE_REDIS_URL", check_redis, "start it with `movie-platform up` or fix MOVIE_REDIS_URL"),
    "objectstore": ("MOVIE_STORAGE_URL", check_object_store, "check MOVIE_STORAGE_URL, MOVIE_S3_ENDPOINT_URL and the AWS_* credentials"),
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
            results.append(CheckResult(service, False, f"{var} is not set: run `movie-platform up` and `eval \"$(movie-platform env)\"`, or set {var}"))
            continue
        try:
            results.append(CheckResult(service, True, check(settings)))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
            reason = redact_url(_first_line(exc))
            results.append(CheckResult(service, False, f"unreachable at {redact_url(getattr(settings, SETTING_OF[service]))}: {reason} -> {remedy}"))
    source = settings.tmdb_source
    detail = (
        f"TMDB API at {settings.tmdb_base_url}"
        if source == "api"
        else "sample source (deterministic, offline); set TMDB_API_KEY or TMDB_READ_ACCESS_TOKEN to crawl the real API"
    )
    results.append(CheckResult("tmdb", True, detail))
    return results


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
