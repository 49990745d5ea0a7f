"""`movie-platform serve` vs `feast serve` on the same repository and data, and serve's p99 at a fixed 500 req/s.

    .venv/bin/movie-platform up && .venv/bin/movie-platform demo     # features online and a champion
    .venv/bin/python benchmarks/serving.py [--goals FILE]

Runs against the embedded default stack: the demo's Feast project, its online movies and the
`champion` of movie_rating_xgb. Both servers run here on loopback with one worker each:
`movie-platform serve` (GET /features, POST /predict) and `feast serve` in feature_repo/ (POST
/get-online-features with the movie_rating_v1 service; no access log, and --max-requests 0 so
gunicorn does not restart its worker every 1,000 requests). The client is httpx async on one
event loop, loopback only: 32 concurrent clients send a fixed number of requests of 1, 10 and 100
random online ids (the same ids for both servers); then an open-loop run sends 1-id requests at a
fixed 500 req/s and measures each latency from its scheduled send time, so a server that falls
behind is charged for the queue. The open loop's client is RawHttp (prebuilt request bytes on
keep-alive connections, the collector paused), so the latency it sees is the server's, not httpx's.
Each comparison runs --rounds times (>= 3), the servers taking turns; figures are medians with
min..max. The client and the servers share the machine's cores (2 here), so the client's
own CPU caps both servers' throughput alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from harness import (
    GoalRow,
    Samples,
    add_goals_argument,
    add_rounds_argument,
    interleaved,
    ratio,
    record_goals,
)

from movie_assets.feature_definitions import FEATURE_SERVICE
from movie_assets.resources.feast import FEATURE_REPO, FeastStore
from movie_assets.resources.mlflow import MlflowTracking
from movie_assets.settings import Settings
from movie_platform.local_stack import REPO_ROOT, Stack

HOST = "127.0.0.1"  # loopback only
CONCURRENCY = 32
SIZES = (1, 10, 100)
REQUESTS = {1: 3000, 10: 2000, 100: 600}  # per closed-loop run (feast serve's slowest run stays under ~20 s)
OPEN_LOOP_RATE = 500
OPEN_LOOP_SECONDS = 6.0
LOG_DIR = REPO_ROOT / ".movie_platform" / "logs"

Send = Callable[[int], Awaitable[httpx.Response]]


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the server process used during the run

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request: near 1000 / rate means the server, not the client, is the bottleneck."""
        return self.server_cpu / len(self.latencies) * 1000

    def p(self, q: float) -> float:
        return float(np.percentile(np.array(self.latencies) * 1000, q))

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def checked(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise SystemExit(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response


async def closed_loop(send: Send, total: int, concurrency: int = CONCURRENCY) -> Run:
    """`concurrency` clients, each sending its next request when its previous answer arrived."""
    run, todo = Run(), iter(range(total))

    async def client() -> None:
        for i in todo:  # shared iterator: one event loop, so each index is taken once
            started = time.perf_counter()
            checked(await send(i))
            run.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - started
    return run


class RawHttp:
    """Keep-alive HTTP/1.1 over asyncio streams with prebuilt request bytes, for the open loop.

    httpx costs the client about half a millisecond of CPU a request; on 2 shared cores, 500 req/s of
    that is a quarter core of client whose stalls (and garbage collections) land in the server's
    latency. This client writes the bytes and reads status, Content-Length and body: tens of microseconds.
    """

    def __init__(self, url: str):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def get(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n\r\n".encode()

    def post(self, path: str, body: bytes) -> bytes:
        head = f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: application/json\r\n"
        return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body

    async def send(self, request: bytes) -> None:
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):  # idle past the server's keep-alive: reconnect once
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        body = await reader.readexactly(length)
        if head[9:12] != b"200":
            raise SystemExit(f"{request.split(b' ', 2)[:2]}: {head[9:12].decode()} {body[:500]!r}")
        self.idle.append((reader, writer))

    def close(self) -> None:
        """Drop the pooled connections (a run after a pause would first meet ones the server closed)."""
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def open_loop(send: Callable[[int], Awaitable[None]], rate: float, seconds: float) -> Run:
    """Requests at fixed send times, whatever the answers do; latency counts from the scheduled time.

    The collector is frozen for the run (it would pause the client, not the server, and be charged to it).
    """
    run, total = Run(), int(rate * seconds)
    in_flight = asyncio.Semaphore(CONCURRENCY * 2)

    async def one(i: int, scheduled: float) -> None:
        async with in_flight:
            await send(i)
        run.latencies.append(time.perf_counter() - scheduled)

    gc.collect()
    gc.disable()
    start = time.perf_counter() + 0.05  # after the collection, which takes a while in this client's heap

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, scheduled)))
    try:
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    run.seconds = time.perf_counter() - start
    return run


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Our own child's process group (started with start_new_session): SIGTERM, then SIGKILL."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def online_ids(env: dict[str, str]) -> list[int]:
    """The demo's online movies and a champion to score them, or an exit saying what to run."""
    from movie_assets.resources.online_writer import OnlineReader

    settings = Settings.from_env(env)
    if MlflowTracking.from_settings(settings).champion() is None:
        raise SystemExit(f"no champion of {settings.model_name}: run `movie-platform demo` first")
    store = FeastStore.from_settings(settings).store()
    ids = OnlineReader(store, store.get_feature_view("movie_features")).stored_ids()
    if len(ids) < 100:
        raise SystemExit(f"{len(ids)} movies online (need 100): run `movie-platform demo` first")
    return ids


def requests_of(ids: list[int], size: int, count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.choice(ids, size, replace=False)] for _ in range(count)]


async def make_servers(serve_url: str, feast_url: str, pids: dict[str, int]) -> Servers:
    return Servers(serve_url, feast_url, pids)  # httpx clients belong to the loop they are made on


class Servers:
    """httpx senders for both servers, over prebuilt requests (building them is not what is measured)."""

    def __init__(self, serve_url: str, feast_url: str, pids: dict[str, int]):
        self.pids = pids
        limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
        self.serve = httpx.AsyncClient(base_url=serve_url, limits=limits, timeout=60)
        self.feast = httpx.AsyncClient(base_url=feast_url, limits=limits, timeout=60)
        self.raw = RawHttp(serve_url)

    def pid(self, name: str) -> int:
        """The process that answers: ours, or gunicorn's one worker under feast serve."""
        return self.pids["feast" if name.startswith("feast") else "serve"]

    def senders(self, batches: list[list[int]]) -> dict[str, Send]:
        paths = ["/features?" + "&".join(f"movie_id={i}" for i in ids) for ids in batches]
        bodies = [json.dumps({"movie_ids": ids}).encode() for ids in batches]
        feast = [
            json.dumps({"feature_service": FEATURE_SERVICE, "entities": {"movie_id": ids}}).encode() for ids in batches
        ]
        headers = {"content-type": "application/json"}
        return {
            "serve /features": lambda i: self.serve.get(paths[i]),
            "feast serve": lambda i: self.feast.post("/get-online-features", content=feast[i], headers=headers),
            "serve /predict": lambda i: self.serve.post("/predict", content=bodies[i], headers=headers),
        }

    def raw_senders(self, batches: list[list[int]]) -> dict[str, Callable[[int], Awaitable[None]]]:
        """The open loop's senders: /features and /predict over RawHttp, requests prebuilt as bytes."""
        gets = [self.raw.get("/features?" + "&".join(f"movie_id={i}" for i in ids)) for ids in batches]
        posts = [self.raw.post("/predict", json.dumps({"movie_ids": ids}).encode()) for ids in batches]
        return {
            "serve /features": lambda i: self.raw.send(gets[i]),
            "serve /predict": lambda i: self.raw.send(posts[i]),
        }

    async def same_values(self, ids: list[int]) -> None:
        """Both servers answer from the same data: equal values for the same movies."""
        ours = checked(await self.serve.get("/features?" + "&".join(f"movie_id={i}" for i in ids))).json()
        theirs = checked(
            await self.feast.post(
                "/get-online-features", json={"feature_service": FEATURE_SERVICE, "entities": {"movie_id": ids}}
            )
        ).json()
        names = theirs["metadata"]["feature_names"]
        columns = {name: result["values"] for name, result in zip(names, theirs["results"], strict=True)}
        for row, movie in enumerate(ours["movies"]):
            for name, value in movie["features"].items():
                theirs_value = columns[name][row]
                if not np.isclose(*(np.nan if v is None else v for v in (value, theirs_value)), equal_nan=True):
                    raise SystemExit(
                        f"movie {movie['movie_id']} {name}: serve {value}, feast serve {columns[name][row]}"
                    )


def measure(loop: asyncio.AbstractEventLoop, servers: Servers, ids: list[int], rounds: int, scale: float) -> dict:
    """Closed loop per size, the three paths interleaved by the harness; then the open-loop runs, interleaved too."""
    loop.run_until_complete(servers.same_values(ids[:5]))
    closed: dict[int, dict[str, list[Run]]] = {}
    for size in SIZES:
        count = max(200, int(REQUESTS[size] * scale))
        senders = servers.senders(requests_of(ids, size, count, seed=size))
        for send in senders.values():  # warm-up: connections, caches, first-call imports
            loop.run_until_complete(closed_loop(send, 200))
        runs: dict[str, list[Run]] = {name: [] for name in senders}
        interleaved(
            {name: closed_run(loop, senders[name], count, runs[name], servers.pid(name)) for name in senders}, rounds
        )
        closed[size] = runs
    one = servers.raw_senders(requests_of(ids, 1, int(OPEN_LOOP_RATE * OPEN_LOOP_SECONDS), seed=99))
    for send in one.values():  # warm-up: the connections the run will reuse
        loop.run_until_complete(open_loop(send, OPEN_LOOP_RATE, 1.0))
    opened: dict[str, list[Run]] = {"serve /features": [], "serve /predict": []}
    interleaved(
        {name: open_run(loop, servers.raw, one[name], runs, servers.pid(name)) for name, runs in opened.items()}, rounds
    )
    return {"closed": closed, "open": opened}


def timed(loop, run, server: int, into: list[Run]) -> Callable[[], None]:
    import psutil

    def go() -> None:
        process = psutil.Process(server)
        before = sum(process.cpu_times()[:2])
        result = loop.run_until_complete(run())
        result.server_cpu = sum(process.cpu_times()[:2]) - before
        into.append(result)

    return go


def closed_run(loop, send: Send, count: int, into: list[Run], server: int) -> Callable[[], None]:
    return timed(loop, lambda: closed_loop(send, count), server, into)


def open_run(loop, raw: RawHttp, send: Callable[[int], Awaitable[None]], into: list[Run], server: int):
    def run() -> Awaitable[Run]:
        raw.close()
        return open_loop(send, OPEN_LOOP_RATE, OPEN_LOOP_SECONDS)

    return timed(loop, run, server, into)


def samples(runs: list[Run], figure: Callable[[Run], float]) -> Samples:
    return Samples([figure(run) for run in runs])


def report(results: dict, cores: int) -> list[GoalRow]:
    print(f"\nclient: httpx async, {CONCURRENCY} concurrent, loopback; client and servers share {cores} cores")
    print(f"{'ids':>4} {'path':<16} {'req/s':>26} {'p50 ms':>24} {'p99 ms':>24} {'server CPU ms/req':>24}")
    rows: list[GoalRow] = []
    for size, runs in results["closed"].items():
        for name, path_runs in runs.items():
            print(
                f"{size:>4} {name:<16} {samples(path_runs, lambda r: r.rate).describe('.0f'):>26} "
                f"{samples(path_runs, lambda r: r.p(50)).describe('.2f'):>24} "
                f"{samples(path_runs, lambda r: r.p(99)).describe('.2f'):>24} "
                f"{samples(path_runs, lambda r: r.cpu_ms).describe('.2f'):>24}"
            )
        ours, feast = runs["serve /features"], runs["feast serve"]
        speed = ratio(samples(ours, lambda r: r.rate), samples(feast, lambda r: r.rate))
        p99 = ratio(samples(ours, lambda r: r.p(99)), samples(feast, lambda r: r.p(99)))
        print(f"{size:>4} serve/feast serve: throughput {speed.describe()}x, p99 {p99.describe()}x")
        rows.append(
            GoalRow(
                f"serve /features throughput vs feast serve, {size} id(s), {CONCURRENCY} clients",
                speed.median,
                2.0,
                "x",
                True,
                speed.spread,
            )
        )
        rows.append(
            GoalRow(f"serve /features p99 vs feast serve, {size} id(s)", p99.median, 1.0, "x", False, p99.spread)
        )
    print(
        f"\nopen loop, 1 id, {OPEN_LOOP_RATE} req/s for {OPEN_LOOP_SECONDS:g} s, RawHttp client "
        "(latency from the scheduled send):"
    )
    for name, path_runs in results["open"].items():
        p50, p99 = samples(path_runs, lambda r: r.p(50)), samples(path_runs, lambda r: r.p(99))
        print(
            f"  {name:<16} p50 {p50.describe('.2f')} ms, p99 {p99.describe('.2f')} ms, "
            f"achieved {samples(path_runs, lambda r: r.rate).describe('.0f')} req/s, "
            f"server CPU {samples(path_runs, lambda r: r.cpu_ms).describe('.2f')} ms/request"
        )
        rows.append(
            GoalRow(
                f"serve {name.split()[-1]} p99 at {OPEN_LOOP_RATE} req/s, 1 id",
                p99.median,
                10.0,
                "ms",
                False,
                p99.spread,
                note=f"client shares the {cores} cores",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_rounds_argument(parser)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the closed-loop request counts")
    add_goals_argument(parser)
    args = parser.parse_args()
    env = {**Stack().env(), **os.environ}
    if not env.get("MOVIE_DB_URL"):
        raise SystemExit("the embedded stack is not running: `movie-platform up` and `movie-platform demo` first")
    ids = online_ids(env)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    serve_port, feast_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    serve_log, feast_log = LOG_DIR / "bench-serve.log", LOG_DIR / "bench-feast-serve.log"
    serve = start([str(bin_dir / "movie-platform"), "serve", "--host", HOST, "--port", str(serve_port)], env, serve_log)
    feast = start(
        [str(bin_dir / "feast"), "serve", "-h", HOST, "-p", str(feast_port), "--no-access-log", "-w", "1"]
        + ["--max-requests", "0"],
        env,
        feast_log,
        cwd=FEATURE_REPO,
    )
    try:
        serve_url, feast_url = f"http://{HOST}:{serve_port}", f"http://{HOST}:{feast_port}"
        wait_healthy(serve_url, serve, serve_log)
        wait_healthy(feast_url, feast, feast_log)
        print(f"{len(ids)} movies online; movie-platform serve on {serve_url}, feast serve on {feast_url}")
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        import psutil

        workers = psutil.Process(feast.pid).children()  # gunicorn's master forks the one worker that answers
        pids = {"serve": serve.pid, "feast": workers[0].pid if workers else feast.pid}
        servers = loop.run_until_complete(make_servers(serve_url, feast_url, pids))
        results = measure(loop, servers, ids, args.rounds, args.scale)
    finally:
        stop(serve)
        stop(feast)
    record_goals(args.goals, report(results, os.cpu_count() or 0))


if __name__ == "__main__":
    main()
