"""`movie-platform serve`: online features and champion scores over HTTP, for the serving side of the stack.

The request path is one pipelined Redis read through the platform's own decoder (`OnlineReader`)
and, for /predict, XGBoost's `inplace_predict` on the decoded array: no Feast SDK, no MLflow call
and no DataFrame model wrapper per request (each costs milliseconds; benchmarks/serving.py
compares with `feast serve`). MLflow is read in the background: every MOVIE_SERVE_POLL_SECONDS
the `champion` alias is looked up, a new version is loaded off the request path and swapped in
as one reference, so a request scores with the old model or the new one, never a mix, and no
restart is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from movie_assets.domain import clock
from movie_assets.domain.movie_records import movie_id_of
from movie_assets.feature_definitions import FEATURE_SERVICE
from movie_assets.resources.feast import FeastStore
from movie_assets.resources.mlflow import CHAMPION, MlflowTracking
from movie_assets.resources.serving import (
    FEATURE_VIEW,
    NoChampionError,
    ServedModel,
    champion_version,
    positions_of,
    served_model,
)
from movie_assets.settings import redact_text, redact_url

POLL_ENV = "MOVIE_SERVE_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 5.0
MAX_IDS = 1000  # per request: one pipelined read; more is a batch job (movie_rating_predictions)
PING_TIMEOUT_S = 6.0  # /health's wait for Redis
MAX_BODY_BYTES = 100_000  # a /predict body of MAX_IDS ids is under 25 kB; larger is refused with 413, unread
ABSENT_HINT = "never materialized, deleted, or their Redis keys expired with the feature view's TTL"

log = logging.getLogger("movie_platform.serve")


class ServeError(RuntimeError):
    """The server cannot start: the message says which service and what to do."""


def poll_seconds(env: dict[str, str]) -> float:
    raw = env.get(POLL_ENV) or str(DEFAULT_POLL_SECONDS)
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ServeError(f"{POLL_ENV} must be a number of seconds above 0, not {raw!r}")
    return value


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Read:
    """What the online store holds for the asked ids: the served rows and why the others are not served."""

    served: list[int]
    values: np.ndarray  # one row per served id, the online columns, NaN = missing value
    not_online: list[int]
    stale: list[dict]  # {"movie_id", "event_timestamp", "stale_since"}: past the feature view's TTL

    def problems(self) -> dict:
        return {"not_online": self.not_online, "stale": self.stale}

    def none_served(self) -> JSONResponse:
        parts = []
        if self.not_online:
            parts.append(f"not in the online store: {self.not_online} ({ABSENT_HINT})")
        if self.stale:
            since = ", ".join(f"{s['movie_id']} since {s['stale_since']}" for s in self.stale)
            parts.append(f"stale, older than the feature view's TTL: {since} (materialize online_features)")
        return error(404, "no online features for the asked movies: " + "; ".join(parts), **self.problems())


class OnlineFeatures:
    """The `movie_rating_v1` features of movies, read from Redis with the platform's decoder."""

    def __init__(self, feast: FeastStore):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from movie_assets.resources import feast_private
        from movie_assets.resources.online_writer import OnlineReader

        store = feast.store()
        try:
            view = store.get_feature_view(FEATURE_VIEW)
            service = store.get_feature_service(FEATURE_SERVICE)
        except Exception as exc:  # FeatureViewNotFoundException & co., or the registry database is down
            raise ServeError(
                f"the Feast registry of project {feast.project} has no usable {FEATURE_VIEW}/{FEATURE_SERVICE} "
                f"({redact_text(str(exc))}): materialize feast_definitions (`movie-platform demo` does)"
            ) from None
        self.reader = OnlineReader(store, view)
        self.columns: list[str] = self.reader.columns
        self.names = [f.name for p in service.feature_view_projections if p.name == FEATURE_VIEW for f in p.features]
        self.positions = positions_of(self.names, self.columns)
        self.ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
        self.redis_url = redact_url(feast.redis_url)
        # /health's own client, without redis-py's retries: they back off for seconds (longer under load)
        # before a refused password or a closed port is reported, and /health must say which at once.
        self._probe = feast_private.redis_client(store.config.online_store)
        self._probe.set_retry(Retry(NoBackoff(), 0))

    def read(self, ids: list[int]) -> Read:
        values = self.reader.read_values(ids)
        absent = np.isnan(values).all(axis=1)
        if not absent.any():
            return Read(ids, values, [], [])
        not_online, stale, null_rows = self.why_absent([i for i, a in zip(ids, absent, strict=True) if a])
        keep = ~absent
        if null_rows:  # a fresh row whose every value is null is served as such
            keep |= np.isin(np.asarray(ids), null_rows)
        return Read([i for i, k in zip(ids, keep, strict=True) if k], values[keep], not_online, stale)

    def why_absent(self, ids: list[int]) -> tuple[list[int], list[dict], list[int]]:
        """Not online (no key), stale (Feast's timestamp older than the TTL, with since when), or all null."""
        from google.protobuf.timestamp_pb2 import Timestamp

        layout = self.reader.layout
        with self.reader.client.pipeline(transaction=False) as pipe:
            for key in layout.keys(np.asarray(ids, dtype="int64")):
                pipe.hget(key, layout.ts_field)
            stamps = pipe.execute()
        now = clock.now()
        not_online, stale, null_rows = [], [], []
        for movie_id, raw in zip(ids, stamps, strict=True):
            if raw is None:
                not_online.append(movie_id)
                continue
            event = Timestamp.FromString(raw).ToDatetime(tzinfo=dt.timezone.utc)
            if self.ttl is not None and event + self.ttl < now:
                stale.append(
                    {"movie_id": movie_id, "event_timestamp": iso(event), "stale_since": iso(event + self.ttl)}
                )
            else:
                null_rows.append(movie_id)
        return not_online, stale, null_rows

    def ping(self) -> None:
        self._probe.ping()


@dataclass
class ChampionFollower:
    """The model behind MLflow's `champion` alias, re-read every poll and swapped as one reference."""

    tracking: MlflowTracking
    columns: list[str]
    served: ServedModel | None = None
    polled_at: float | None = None  # time.time() of the last poll that reached the registry
    registry_error: str | None = None
    load_error: str | None = None

    def refresh(self) -> None:
        """Look up the alias; load a new version before swapping (runs in a worker thread, never on a request)."""
        try:
            version = champion_version(self.tracking)
        except Exception as exc:  # unreachable MLflow: keep serving what we have
            message = f"MLflow registry at {redact_url(self.tracking.tracking_uri)}: {redact_text(str(exc))[:300]}"
            if message != self.registry_error:
                log.warning("%s (still serving %s)", message, self.describe())
            self.registry_error = message
            return
        self.registry_error, self.polled_at = None, time.time()
        current = self.served
        if version is None:
            if current is not None:
                log.warning("%s has no `champion` alias any more: /predict answers 503", self.tracking.registered_model)
            self.served = None
            return
        if current is not None and current.version == version:
            return
        try:
            model = served_model(self.tracking, version, self.columns)
        except Exception as exc:
            message = f"cannot load {self.tracking.registered_model} v{version}: {redact_text(str(exc))[:300]}"
            if message != self.load_error:
                log.error("%s (still serving %s)", message, self.describe())
            self.load_error = message
            return
        self.load_error = None
        self.served = model  # the swap: one reference, read once per request
        log.info("serving %s v%s (alias %s; was %s)", model.name, model.version, CHAMPION, self.describe(current))

    def describe(self, model: ServedModel | None | bool = True) -> str:
        model = self.served if model is True else model
        return f"v{model.version}" if isinstance(model, ServedModel) else "no model"

    async def follow(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.refresh)


def error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class BadRequest(ValueError):
    """400: the request names what it asks for wrongly."""


class TooLarge(ValueError):
    """413: the request is larger than any valid one."""


def movie_ids(raw: list) -> list[int]:
    """Each asked movie once, in the asked order; a BadRequest names the values that are no TMDB id."""
    if not raw:
        raise BadRequest(
            "no movie ids: give at least one (GET /features?movie_id=1&movie_id=2, POST /predict with "
            '{"movie_ids": [1, 2]})'
        )
    ids = [movie_id_of(value) for value in raw]
    bad = [value for value, movie_id in zip(raw, ids, strict=True) if movie_id is None]
    if bad:
        raise BadRequest(f"not TMDB movie ids (positive integers below 2^63): {bad[:20]}")
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_IDS:
        raise BadRequest(f"{len(unique)} movie ids in one request; at most {MAX_IDS}")
    return unique  # type: ignore[return-value]


def plain(values: np.ndarray) -> list[list[float | None]]:
    rows = values.tolist()
    if np.isnan(values).any():  # JSON has no NaN: a missing value is null
        rows = [[None if v != v else v for v in row] for row in rows]
    return rows


def redis_trouble(redis_url: str, exc: BaseException) -> str:
    """What is wrong with the online store, for a 503 or /health: refused credentials are not an outage."""
    text = str(exc)
    if type(exc).__name__ == "AuthenticationError" or "WRONGPASS" in text or "NOAUTH" in text:
        return (
            f"Redis (the online store) at {redis_url} refused the credentials in MOVIE_REDIS_URL: give it the "
            "password the server expects (`movie-platform env` prints the embedded stack's)"
        )
    return (
        f"Redis (the online store) at {redis_url} did not answer: start it (`movie-platform up`) or check "
        "MOVIE_REDIS_URL"
    )


async def json_body(request: Request) -> object:
    """The request's JSON; BadRequest says what is wrong, TooLarge refuses a body over MAX_BODY_BYTES unread."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is {int(declared):,} bytes; at most {MAX_BODY_BYTES:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise TooLarge(f"the body is over {MAX_BODY_BYTES:,} bytes")
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest('the body nests too deep to be {"movie_ids": [...]}') from None
    except ValueError:  # not JSON, or an integer of thousands of digits
        raise BadRequest('the body must be JSON: {"movie_ids": [290000001, 290000002]}') from None


def build_app(features: OnlineFeatures, follower: ChampionFollower, interval: float) -> Starlette:
    def read(ids: list[int]) -> Read | JSONResponse:
        try:
            return features.read(ids)
        except Exception as exc:
            import redis

            if isinstance(exc, redis.RedisError):
                trouble = redis_trouble(features.redis_url, exc)
                log.error("%s: %s", trouble, redact_text(str(exc)))
                return error(503, trouble)
            raise

    async def get_features(request: Request) -> JSONResponse:
        try:
            ids = movie_ids(request.query_params.getlist("movie_id"))
        except BadRequest as exc:
            return error(400, str(exc))
        result = read(ids)
        if isinstance(result, JSONResponse):
            return result
        if not result.served:
            return result.none_served()
        values = result.values if features.positions is None else result.values[:, features.positions]
        names = features.names
        rows = [
            {"movie_id": movie_id, "features": dict(zip(names, row, strict=True))}
            for movie_id, row in zip(result.served, plain(values), strict=True)
        ]
        return JSONResponse({"feature_service": FEATURE_SERVICE, "movies": rows, **result.problems()})

    async def post_predict(request: Request) -> JSONResponse:
        try:
            body = await json_body(request)
        except TooLarge as exc:
            return error(413, str(exc))
        except BadRequest as exc:
            return error(400, str(exc))
        raw = body.get("movie_ids") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            return error(400, 'the body must be a JSON object with a list "movie_ids": {"movie_ids": [290000001]}')
        try:
            ids = movie_ids(raw)
        except BadRequest as exc:
            return error(400, str(exc))
        model = follower.served  # read once: this request scores with this version, whatever the poller does
        if model is None:
            return error(503, no_model_message())
        result = read(ids)
        if isinstance(result, JSONResponse):
            return result
        if not result.served:
            return result.none_served()
        scores = model.score(result.values).tolist()
        return JSONResponse(
            {
                "model": {"name": model.name, "version": model.version, "alias": CHAMPION},
                "predictions": [
                    {"movie_id": movie_id, "vote_average": score}
                    for movie_id, score in zip(result.served, scores, strict=True)
                ],
                **result.problems(),
            }
        )

    def no_model_message() -> str:
        if follower.registry_error and follower.polled_at is None:
            return f"no model loaded yet: {follower.registry_error}; start MLflow or check MLFLOW_TRACKING_URI"
        if follower.load_error:
            return f"no model loaded: {follower.load_error}"
        message = str(NoChampionError.of(follower.tracking.registered_model))
        return f"{message}; it is served within {interval:g} s of the alias moving, no restart needed"

    async def health(request: Request) -> JSONResponse:
        try:
            # The probe does not retry; the wait only bounds a Redis that accepts and then never answers.
            await asyncio.wait_for(asyncio.to_thread(features.ping), timeout=PING_TIMEOUT_S)
            redis_state: dict = {"ok": True, "url": features.redis_url}
        except Exception as exc:
            trouble = redis_trouble(features.redis_url, exc)
            detail = str(exc) or f"no answer within {PING_TIMEOUT_S:g} s"
            redis_state = {"ok": False, "url": features.redis_url, "error": f"{trouble}: {redact_text(detail)}"}
        registry = {
            "ok": follower.registry_error is None and follower.polled_at is not None,
            "url": redact_url(follower.tracking.tracking_uri),
            "seconds_since_poll": None if follower.polled_at is None else round(time.time() - follower.polled_at, 1),
            "poll_seconds": interval,
        }
        if follower.registry_error:
            registry["error"] = follower.registry_error
        model = follower.served
        body = {
            "redis": redis_state,
            "registry": registry,
            "model": {"name": model.name, "version": model.version, "alias": CHAMPION} if model else None,
            "feature_service": FEATURE_SERVICE,
        }
        if model is None:
            body["model_error"] = no_model_message()
        ok = redis_state["ok"] and registry["ok"] and model is not None
        return JSONResponse({"status": "ok" if ok else "degraded", **body}, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(follower.refresh)  # serve the champion from the first request on
        task = asyncio.create_task(follower.follow(interval))
        try:
            yield
        finally:
            task.cancel()

    return Starlette(
        routes=[
            Route("/features", get_features, methods=["GET"]),
            Route("/predict", post_predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def run(feast: FeastStore, tracking: MlflowTracking, sock: socket.socket, interval: float, access_log: bool) -> None:
    """Serve on `sock` (`serve_process.claim`) until SIGINT/SIGTERM (uvicorn, one worker: uvloop and httptools
    when installed)."""
    import uvicorn

    # A registry outage is retried by the next poll: fail fast instead of MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    features = OnlineFeatures(feast)
    follower = ChampionFollower(tracking, features.columns)
    app = build_app(features, follower, interval)
    log.info(
        "features of %s (project %s) from %s; model %s alias %s from %s, polled every %g s",
        FEATURE_SERVICE,
        feast.project,
        features.redis_url,
        tracking.registered_model,
        CHAMPION,
        redact_url(tracking.tracking_uri),
        interval,
    )
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%s (the model loads first; requests wait until then)", host, port)
    uvicorn.Server(uvicorn.Config(app, access_log=access_log, log_level="info")).run(sockets=[sock])
