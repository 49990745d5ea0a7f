"""Dagster's half of the Airflow bridge (dagster-airlift): Airflow schedules, Dagster owns the assets.

Always: the assets that `movie_pipeline_monthly`'s tasks stand for carry airlift's
task mapping, which is how the proxied Airflow tasks find them over GraphQL.
With AIRFLOW_URL set: the DAGs become assets in our graph, the legacy DAG's output joins
it as the external asset `partner_ratings` (group `airflow`; nothing of ours depends on
it, so without the bridge it is not in the graph at all), and a polling sensor turns
finished Airflow runs into materializations (downstream assets react through their
automation conditions). Airflow that cannot be used at load (down, refused login, no
credentials) never costs the code location: it loads without the bridge, logs a
warning, and the bridge's sensor (same name) fails every tick with what is wrong and
what to do, so the UI shows it where the working sensor would be.
"""

import datetime as dt
import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import dagster as dg
import requests

from movie_assets.partitions import release_month_partitions
from movie_assets.settings import redact_text, redact_url

# airlift's public API is marked beta; say so once here, not at every code-location load.
warnings.filterwarnings("ignore", category=dg.BetaWarning, module=rf"({__name__}|dagster_airlift)")

PIPELINE_DAG = "movie_pipeline_monthly"
LEGACY_DAG = "partner_ratings_drop"
# Airflow task -> the Dagster assets it materializes (one run per task and release month).
PIPELINE_TASKS = {
    "ingest": ("movies_raw", "movies_raw_backup"),
    "prepare": ("movies_clean", "eda_stats"),
    "features": ("movie_features",),
}
INSTANCE_NAME = "airflow"
# airlift's name for its polling sensor; the stand-in of a bridge that could not load takes it over.
BRIDGE_SENSOR = f"{INSTANCE_NAME}__airflow_dag_status_sensor"
DEFAULT_SENSOR_INTERVAL_S = 30
RELOAD = "then reload the code location (UI: Deployment > Reload, or restart `make dev`)"

logger = logging.getLogger(__name__)

partner_ratings = dg.AssetSpec(
    "partner_ratings",
    description="A partner's daily ratings file, delivered by the legacy Airflow DAG partner_ratings_drop. "
    "Dagster does not run it; the Airflow sensor records each delivery.",
    group_name="airflow",
    kinds={"airflow", "csv"},
)


# Whatever `load_assets_from_modules` yields (its union names a private Dagster class).
_Loaded = TypeVar("_Loaded")


class AirflowBridgeError(RuntimeError):
    """The bridge is configured (AIRFLOW_URL) but Airflow cannot be used."""


def map_airflow_tasks(assets: Iterable[_Loaded]) -> list[_Loaded | dg.AssetsDefinition | dg.AssetSpec]:
    """Our assets with airlift's task mapping on the ones a pipeline task stands for.

    Takes what `load_assets_from_modules` returns; only asset definitions and specs can carry a mapping,
    anything else passes through unchanged.
    """
    loaded = list(assets)
    by_key = {a.key.to_user_string(): a for a in loaded if isinstance(a, dg.AssetsDefinition | dg.AssetSpec)}
    others = [a for a in loaded if not isinstance(a, dg.AssetsDefinition | dg.AssetSpec)]
    mapped_keys = {key for keys in PIPELINE_TASKS.values() for key in keys}
    missing = mapped_keys - set(by_key)
    if missing:
        raise AirflowBridgeError(f"{PIPELINE_DAG} maps to assets that do not exist: {sorted(missing)}")
    from dagster_airlift.core import assets_with_task_mappings

    pipeline = assets_with_task_mappings(
        dag_id=PIPELINE_DAG,
        task_mappings={task: [by_key[key] for key in keys] for task, keys in PIPELINE_TASKS.items()},
    )
    return [*pipeline, *(a for key, a in by_key.items() if key not in mapped_keys), *others]


def legacy_dag_assets() -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """`partner_ratings`, mapped to the legacy DAG's task that delivers it: only the bridge's sensor records it."""
    from dagster_airlift.core import assets_with_task_mappings

    return list(assets_with_task_mappings(dag_id=LEGACY_DAG, task_mappings={"receive_ratings_file": [partner_ratings]}))


def scheduled_by_airflow(environ: Mapping[str, str] = os.environ) -> set[str]:
    """The asset keys the proxied DAG materializes, when the bridge is on (AIRFLOW_URL set)."""
    return {key for keys in PIPELINE_TASKS.values() for key in keys} if environ.get("AIRFLOW_URL") else set()


def with_airflow(defs: dg.Definitions, environ: Mapping[str, str] = os.environ) -> dg.Definitions:
    """`defs` as they are when AIRFLOW_URL is unset; bridged to that Airflow when it is set and usable.

    When it is set but Airflow cannot be used, `defs` plus the stand-in sensor `bridge_down_sensor`:
    every other asset, job and sensor stays, only the bridge is missing, and it says why.
    """
    if not environ.get("AIRFLOW_URL"):
        return defs
    try:
        return bridged(defs, environ)
    except AirflowBridgeError as exc:
        reason = str(exc)
    logger.warning(f"loading the code location without the Airflow bridge: {reason}")
    return dg.Definitions.merge(defs, dg.Definitions(sensors=[bridge_down_sensor(reason, environ)]))


def bridged(defs: dg.Definitions, environ: Mapping[str, str]) -> dg.Definitions:
    """airlift's definitions: fetches the DAGs from Airflow now; AirflowBridgeError when it cannot."""
    from dagster_airlift.core import build_defs_from_airflow_instance

    instance = airflow_instance(environ)
    check_reachable(instance, environ["AIRFLOW_URL"])
    try:
        return build_defs_from_airflow_instance(
            airflow_instance=instance,
            defs=dg.Definitions.merge(defs, dg.Definitions(assets=legacy_dag_assets())),
            event_transformer_fn=partition_by_data_interval,
            sensor_minimum_interval_seconds=sensor_interval(environ),
        )
    except Exception as exc:  # noqa: BLE001 - whatever stops airlift's fetch stops only the bridge
        # Reachable a moment ago, failed while airlift listed DAGs, tasks and datasets (Airflow stopping,
        # an API error, an answer airlift cannot read).
        if isinstance(exc, KeyError) and exc.args and exc.args[0] in (PIPELINE_DAG, LEGACY_DAG):
            raise AirflowBridgeError(
                f"Airflow at {redact_url(environ['AIRFLOW_URL'])} (AIRFLOW_URL) has no DAG {exc.args[0]}, which "
                "the bridge maps assets to: give Airflow this repository's airflow/dags as its DAG folder "
                f"(`make airflow` does), {RELOAD}"
            ) from None
        detail = _without_secrets(str(exc).strip().splitlines()[0] if str(exc).strip() else "", environ)
        raise AirflowBridgeError(
            f"Airflow at {redact_url(environ['AIRFLOW_URL'])} (AIRFLOW_URL) failed while the bridge loaded its "
            f"DAGs ({type(exc).__name__}: {detail[:300]}): check Airflow's webserver log, {RELOAD}"
        ) from None


def sensor_interval(environ: Mapping[str, str]) -> int:
    return int(environ.get("AIRFLOW_SENSOR_INTERVAL_SECONDS") or DEFAULT_SENSOR_INTERVAL_S)


def bridge_down_sensor(reason: str, environ: Mapping[str, str]) -> dg.SensorDefinition:
    """Stands in for airlift's sensor when the bridge could not load: each tick fails with what is wrong now.

    It asks Airflow again on every tick, so the message also says when Airflow is back and only a
    reload of the code location is missing. It never requests runs.
    """
    url = redact_url(environ["AIRFLOW_URL"])

    @dg.sensor(
        name=BRIDGE_SENSOR,
        minimum_interval_seconds=sensor_interval(environ),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"The Airflow bridge (AIRFLOW_URL={url}) did not load: {reason}",
    )
    def airflow_bridge_down(context: dg.SensorEvaluationContext):
        problem = bridge_problem(environ)
        if problem is None:
            problem = (
                f"Airflow at {url} (AIRFLOW_URL) answers now, but the code location loaded while it did not: "
                f"{RELOAD.removeprefix('then ')}"
            )
        raise AirflowBridgeError(f"The Airflow bridge is not loaded. {problem}")

    return airflow_bridge_down


def bridge_problem(environ: Mapping[str, str]) -> str | None:
    """What stops the bridge right now (credentials, reachability, login), or None when Airflow answers."""
    try:
        check_reachable(airflow_instance(environ), environ["AIRFLOW_URL"], timeout_s=5)
    except AirflowBridgeError as exc:
        return str(exc)
    return None


def _without_secrets(text: str, environ: Mapping[str, str]) -> str:
    password = environ.get("AIRFLOW_PASSWORD")
    text = redact_text(text)
    return text.replace(password, "***") if password else text


def airflow_instance(environ: Mapping[str, str]):
    from dagster_airlift.core import AirflowBasicAuthBackend, AirflowInstance

    username, password = environ.get("AIRFLOW_USERNAME"), environ.get("AIRFLOW_PASSWORD")
    if not username or not password:
        raise AirflowBridgeError(
            "AIRFLOW_URL is set but AIRFLOW_USERNAME or AIRFLOW_PASSWORD is not: "
            f"the bridge logs in to Airflow's REST API with basic auth; set both (or unset AIRFLOW_URL), {RELOAD}"
        )
    backend = AirflowBasicAuthBackend(
        webserver_url=environ["AIRFLOW_URL"].rstrip("/"), username=username, password=password
    )
    return AirflowInstance(auth_backend=backend, name=INSTANCE_NAME)


def check_reachable(instance, url: str, timeout_s: float = 10) -> None:
    """One authenticated REST call, so a down or misconfigured Airflow fails with a message that says which."""
    shown = redact_url(url)
    advice = f"start it (`make airflow`) or unset AIRFLOW_URL, {RELOAD}"
    session = instance.auth_backend.get_session()
    try:
        response = session.get(f"{instance.auth_backend.get_webserver_url()}/api/v1/dags?limit=1", timeout=timeout_s)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise AirflowBridgeError(
            f"Airflow at {shown} (AIRFLOW_URL) is unreachable ({type(exc).__name__}): {advice}"
        ) from None
    if response.status_code in (401, 403):
        raise AirflowBridgeError(
            f"Airflow at {shown} refused the credentials of AIRFLOW_USERNAME={instance.auth_backend.username} "
            f"(HTTP {response.status_code}); check AIRFLOW_PASSWORD and that the API allows basic auth "
            f"(AIRFLOW__API__AUTH_BACKENDS), {RELOAD}"
        )
    if response.status_code != 200:
        raise AirflowBridgeError(f"Airflow at {shown} answered HTTP {response.status_code} to /api/v1/dags: {advice}")


def release_month_of_interval(start: dt.datetime, end: dt.datetime) -> str:
    """The release-month partition whose window is exactly the data interval [start, end)."""
    key = release_month_partitions.get_partition_key_for_timestamp(start.timestamp())
    window = release_month_partitions.time_window_for_partition_key(key)
    if (window.start.timestamp(), window.end.timestamp()) != (start.timestamp(), end.timestamp()):
        raise AirflowBridgeError(
            f"Airflow data interval {start.isoformat()} .. {end.isoformat()} is not one release month"
        )
    return key


def partition_by_data_interval(context, airflow_data, materializations: Sequence[dg.AssetMaterialization]):
    """airlift's event transformer: a synthesized materialization of a monthly asset gets the release
    month of its DAG run's data interval (airlift's default uses the logical date, which for a manual
    trigger is the trigger time, not the month the run covers)."""
    for mat in materializations:
        spec = airflow_data.airflow_mapped_asset_specs[mat.asset_key]
        if spec.partitions_def != release_month_partitions:
            yield mat
            continue
        start, end = _data_interval(mat)
        yield mat._replace(partition=release_month_of_interval(start, end))


def _data_interval(mat: dg.AssetMaterialization) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the DAG run airlift attached to a synthesized materialization (JSON, as text or object)."""
    raw = mat.metadata["Run Metadata (raw)"].value
    run = json.loads(raw) if isinstance(raw, str) else raw
    bounds = []
    for key in ("data_interval_start", "data_interval_end"):
        value = run.get(key) if isinstance(run, Mapping) else None
        if not isinstance(value, str):
            raise AirflowBridgeError(
                f"Airflow run metadata of {mat.asset_key.to_user_string()} has no {key} ({value!r}): "
                "monthly assets need DAG runs with a data interval"
            )
        bounds.append(dt.datetime.fromisoformat(value))
    return bounds[0], bounds[1]
