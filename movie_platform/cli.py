"""The `movie-platform` command: run the embedded stack and use the platform from a terminal."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from movie_assets.settings import SettingError, Settings, port_setting, redact_env_value, redact_url
from movie_platform.local_stack import Stack, StackError


def stack_env() -> dict[str, str]:
    """The running stack's variables, overridden by whatever the shell already sets."""
    return {**Stack().env(), **os.environ}


def airflow_runtime():
    from movie_platform.airflow_runtime import AirflowRuntime

    return AirflowRuntime()


def cmd_up(args: argparse.Namespace) -> int:
    env = Stack().up(with_s3=args.with_s3)
    print("\n".join(f"{name}={redact_env_value(name, value)}" for name, value in sorted(env.items())))
    print('\nConfigure this shell with:  eval "$(movie-platform env)"')
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    airflow_runtime().down()
    Stack().down()
    return 0


def print_redacted(env: dict[str, str]) -> None:
    """NAME=value lines with passwords and tokens as ***: what a command set up, safe to paste."""
    print("\n".join(f"{name}={redact_env_value(name, value)}" for name, value in sorted(env.items())))


def cmd_airflow(args: argparse.Namespace) -> int:
    """Airflow webserver + scheduler (installs .venv-airflow on first use); `make dev` then bridges to it."""
    print_redacted(airflow_runtime().up())
    print(
        "\nThe password is in .movie_platform/airflow/credentials.json. `make dev` now loads the Airflow bridge;"
        "\nunpause movie_pipeline_monthly in the Airflow UI to let it schedule."
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = Stack().status() + airflow_runtime().status()
    if not rows:
        print("embedded stack: never started here (run `movie-platform up`)")
        return 0
    for row in rows:
        state = "external" if row.get("external") else ("running" if row["running"] else "stopped")
        pid = f"pid {row['pid']}" if row.get("pid") and row["running"] else ""
        print(f"{row['name']:<17} {state:<9} {redact_url(row['url']):<50} {pid}")
    if not any(r["running"] and not r.get("external") for r in rows):
        print("no process of the embedded stack is running")
    return 0


def cmd_rotate_secrets(args: argparse.Namespace) -> int:
    """New PostgreSQL and Redis passwords for the running embedded stack (data kept)."""
    print_redacted(Stack().rotate_secrets())
    print(
        "\nRestart what runs with the old passwords (`make dev`, `movie-platform lab`, `make airflow`'s bridge)"
        ' and run  eval "$(movie-platform env)"  again in your shells.'
    )
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    env = Stack().env()
    if not env:
        print("# the embedded stack is not running: `movie-platform up` first", file=sys.stderr)
        return 1
    env.update(airflow_runtime().env())
    for name, value in sorted(env.items()):
        shown = redact_env_value(name, value) if args.redacted else value
        print(f"export {name}={shlex.quote(shown)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from movie_platform.doctor import run_checks

    results = run_checks(Settings.from_env(stack_env()))
    for result in results:
        print(result.line())
    return 0 if all(r.ok for r in results) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from movie_platform.demo import run_demo

    env = Stack().env()
    if not env and not os.environ.get("MOVIE_DB_URL"):
        print("error: nothing to run against: `movie-platform up` first (or set MOVIE_DB_URL & co.)", file=sys.stderr)
        return 1
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    return 0 if run_demo(Settings.from_env(), verbose=args.verbose) else 1


def cmd_dev(args: argparse.Namespace) -> int:
    """Embedded stack + `dg dev`, stopped by Ctrl-C, SIGTERM or `movie-platform down`.

    Started with `&` from a non-interactive shell, we inherit SIGINT ignored, and so would
    `dg dev`, which maps SIGTERM to its SIGINT handler: it then ignored both. Handlers we
    install here reach us, and reset to the defaults in the child at exec. The child leads its
    own process group, recorded (PID + start time) as `dev` so that `down` stops the whole group.
    """
    import subprocess

    from movie_platform.browser import dev_command
    from movie_platform.local_stack import service_entry

    stack = Stack()
    # A running `make airflow` turns the bridge on (AIRFLOW_URL & co.), unless the shell says otherwise.
    env = {**os.environ, **stack.up()}
    env.update({k: v for k, v in airflow_runtime().env().items() if k not in os.environ})
    cmd = dev_command(args.port)
    catch_stop_signals()
    # In DAGSTER_HOME: `dg dev` warns about a dagster.yaml in its working directory that is not
    # DAGSTER_HOME's, and the repository's own (the template of this one) is one.
    proc = subprocess.Popen(cmd, env=env, cwd=env["DAGSTER_HOME"], start_new_session=True, restore_signals=True)
    url = f"http://127.0.0.1:{args.port}"
    try:
        stack.record_process("dev", service_entry("dev", url, proc.pid, None))
        print(f"Dagster UI on {url} (Ctrl-C stops it; `make down` stops it and the stack)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return stop_dev(proc)


def catch_stop_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt here, even when the shell started us with them ignored."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def stop_dev(proc) -> int:
    """SIGINT to `dg dev`'s group (it stops its webserver and daemon), SIGKILL after 30 s.

    `proc` is our unreaped child, so its PID (the group's id) cannot belong to anyone else yet.
    """
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def cmd_lab(args: argparse.Namespace) -> int:
    """JupyterLab on notebooks/ with the stack's environment, in the background (`down` stops it)."""
    from movie_platform.lab import start_lab

    url = start_lab(Stack())
    print(f"JupyterLab on {url}\n(`movie-platform status` lists it; `make down` stops it with the stack)")
    return 0


ABSENT_HINT = " (never materialized, keys expired, or older than the feature view's TTL)"


def feast_store_from_env():
    from movie_assets.resources.feast import FeastStore

    settings = Settings.from_env(stack_env())
    missing = [
        name
        for name, value in (
            ("MOVIE_DB_URL", settings.db_url),
            ("MOVIE_REDIS_URL", settings.redis_url),
            ("MOVIE_STORAGE_URL", settings.storage_url),
        )
        if not value
    ]
    if missing:
        raise StackError(f"{', '.join(missing)} not set: run `movie-platform up` or set them")
    return FeastStore.from_settings(settings)


def cmd_features(args: argparse.Namespace) -> int:
    from movie_assets.resources.serving import absent_ids, online_feature_rows

    movie_ids = list(dict.fromkeys(args.movie_ids))  # each movie once, in the order asked
    frame = online_feature_rows(feast_store_from_env(), movie_ids)
    print(frame.T.to_string())
    absent = absent_ids(frame, movie_ids)
    if absent:
        print(
            f"\nnot in the online store: {absent}{ABSENT_HINT}",
            file=sys.stderr,
        )
        return 1
    return 0


def without_progress_bars() -> None:
    """MLflow draws a tqdm bar for every model it downloads: noise between a command's lines, in every serve log."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def cmd_predict(args: argparse.Namespace) -> int:
    """The champion model's rating for movies, from their online features in Redis."""
    from movie_assets.resources.mlflow import MlflowTracking
    from movie_assets.resources.serving import NoChampionError, predict

    without_progress_bars()
    settings = Settings.from_env(stack_env())
    if not settings.mlflow_tracking_uri:
        raise StackError("MLFLOW_TRACKING_URI is not set: run `movie-platform up` or set it")
    try:
        result = predict(
            feast_store_from_env(),
            MlflowTracking.from_settings(settings),
            list(dict.fromkeys(args.movie_ids)),
        )
    except NoChampionError as exc:
        raise StackError(str(exc)) from None
    print(
        f"{'movie_id':>12}  predicted vote average  (model {result.model_name} v{result.model_version}, alias champion)"
    )
    for movie_id, value in result.scores.items():
        print(f"{movie_id:>12}  {value:.2f}")
    if result.absent:
        print(
            f"not in the online store: {result.absent}{ABSENT_HINT}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """GET /features, POST /predict and GET /health over HTTP, following MLflow's `champion` alias.

    The port is claimed, and the process recorded in the stack, before anything loads (`serve_process`).
    """
    from movie_platform import serve_process

    env = stack_env()
    port = args.port or port_setting(serve_process.PORT_ENV, serve_process.DEFAULT_PORT, env)
    sock = serve_process.claim(Stack(), args.host, port)
    # Feast, MLflow and the model load only now, on a port that is already ours.
    from movie_assets.resources.mlflow import MlflowTracking
    from movie_platform import serve

    without_progress_bars()
    settings = Settings.from_env(env)
    if not settings.mlflow_tracking_uri:
        raise StackError("MLFLOW_TRACKING_URI is not set: run `movie-platform up` or set it")
    try:
        interval = serve.poll_seconds(env)
        serve.run(feast_store_from_env(), MlflowTracking.from_settings(settings), sock, interval, args.access_log)
    except (serve.ServeError, ValueError) as exc:
        raise StackError(str(exc)) from None
    return 0


def movie_id_arg(text: str) -> int:
    """A TMDB id on the command line: a positive integer that fits PostgreSQL's bigint."""
    from movie_assets.domain.movie_records import movie_id_of

    movie_id = movie_id_of(text)
    if movie_id is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TMDB movie id (a positive integer below 2^63)")
    return movie_id


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movie-platform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the embedded stack (idempotent)")
    up.add_argument("--with-s3", action="store_true", help="also start an S3 API server and use it as the object store")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up`, `dev`, `lab`, `serve` and `airflow` started").set_defaults(
        func=cmd_down
    )
    sub.add_parser("airflow", help="start Airflow (webserver + scheduler) for the Dagster bridge").set_defaults(
        func=cmd_airflow
    )
    sub.add_parser("status", help="list services, URLs and PIDs").set_defaults(func=cmd_status)
    env = sub.add_parser("env", help="print export lines for the running stack")
    env.add_argument("--redacted", action="store_true", help="passwords and tokens as *** (to share or paste)")
    env.set_defaults(func=cmd_env)
    sub.add_parser(
        "rotate-secrets", help="new passwords for the embedded PostgreSQL and Redis (restarts Redis and MLflow)"
    ).set_defaults(func=cmd_rotate_secrets)
    sub.add_parser("doctor", help="check every configured service").set_defaults(func=cmd_doctor)
    demo = sub.add_parser("demo", help="materialize the whole asset graph on the sample partitions")
    demo.add_argument("--verbose", action="store_true", help="Dagster's event stream on the console too")
    demo.set_defaults(func=cmd_demo)
    features = sub.add_parser("features", help="print the online (Redis) features of movies")
    features.add_argument("movie_ids", type=movie_id_arg, nargs="+", metavar="MOVIE_ID")
    features.set_defaults(func=cmd_features)
    predict = sub.add_parser("predict", help="rate movies with the champion model and their online features")
    predict.add_argument("movie_ids", type=movie_id_arg, nargs="+", metavar="MOVIE_ID")
    predict.set_defaults(func=cmd_predict)
    served = sub.add_parser("serve", help="serve online features and champion scores over HTTP (foreground)")
    served.add_argument("--host", default="127.0.0.1")
    served.add_argument(
        "--port", type=int, default=None, help="default: MOVIE_SERVE_PORT or 18000; a taken port fails at once"
    )
    served.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    served.set_defaults(func=cmd_serve)
    dev = sub.add_parser("dev", help="embedded stack + Dagster UI")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=cmd_dev)
    sub.add_parser("lab", help="embedded stack + JupyterLab on notebooks/ (background; `down` stops it)").set_defaults(
        func=cmd_lab
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StackError, SettingError) as exc:  # a named service or variable, and what to do: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
