"""docker-compose.yml checked on paper (no Docker engine here): the official Compose Specification schema,
then our own rules: services, env names, health, order, instance files."""

import copy
import hashlib
import json
import re

import jsonschema
import pytest
import yaml

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
    "MOVIE_TRAINING_CRON",
}
PLATFORM_SERVICES = {
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
AIRFLOW_SERVICES = {"airflow-init", "airflow-webserver", "airflow-scheduler"}
DOCKER_DIR = REPO_ROOT / "docker"
SPEC_SCHEMA = DOCKER_DIR / "compose-spec.schema.json"  # provenance and sha256: docker/README.md


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


def test_dagster_dev_finds_no_instance_file_to_ignore_in_the_repo_root():
    """`dagster dev` warns that a dagster.yaml in its working directory is ignored (DAGSTER_HOME wins)."""
    assert [name for name in ("dagster.yaml", "dagster.yml") if (REPO_ROOT / name).exists()] == []


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
    published = [p.split(":")[0] for s in compose["services"].values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))
    assert {"3000", "5000", "8888", "9000", "5432", "6379"} <= set(published)


def test_secrets_come_from_env_example(compose):
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    required = {m for m in re.findall(r"\$\{(\w+)\}", text)}
    example = {
        line.split("=", 1)[0]
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert required <= example, required - example


def test_dagster_instance_and_workspace_agree_with_compose(compose):
    instance = yaml.safe_load((DOCKER_DIR / "dagster.yaml").read_text())
    assert "cp docker/dagster.yaml workspace.yaml $DAGSTER_HOME/" in (REPO_ROOT / "Dockerfile").read_text()
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
    for name in AIRFLOW_SERVICES:
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
