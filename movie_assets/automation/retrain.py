"""Retrain `movie_rating_model` when a share of its labels changed since it last trained.

The weekly cron (conditions.py) keeps a quiet week's model current. A change sync that
moves many vote averages asks sooner: this sensor sums the syncs' `labels_changed`
(domain/change_sync.py) over the `movies_raw` materializations after the model's newest
one, and requests a training run once they reach MOVIE_RETRAIN_SHARE (default 0.1) of the
`labelled_movies` that model learned from. Full crawls replace months without counting
label changes; the cron covers them.
"""

import os

import dagster as dg

MODEL = dg.AssetKey("movie_rating_model")
RAW = dg.AssetKey("movies_raw")
DEFAULT_RETRAIN_SHARE = 0.1
OFF = ("off", "no", "false", "0")


def retrain_share(environ=os.environ) -> float | None:
    """MOVIE_RETRAIN_SHARE as a fraction in (0, 1], or None when it is `off`."""
    text = (environ.get("MOVIE_RETRAIN_SHARE") or str(DEFAULT_RETRAIN_SHARE)).strip().lower()
    if text in OFF:
        return None
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ValueError(f"MOVIE_RETRAIN_SHARE must be a fraction in (0, 1] or `off`, not {text!r}")
    return share


def count(metadata, name: str) -> int:
    """An integer metadata value, 0 when absent (crawls, and syncs before labels were counted)."""
    value = metadata.get(name)
    return int(value.value) if isinstance(value, dg.IntMetadataValue) and value.value is not None else 0


def labels_changed_since(instance: dg.DagsterInstance, after_storage_id: int) -> int:
    """The sum of `labels_changed` over the movies_raw materializations after a storage id."""
    total, cursor = 0, None
    records_filter = dg.AssetRecordsFilter(asset_key=RAW, after_storage_id=after_storage_id)
    while True:
        page = instance.fetch_materializations(records_filter, limit=1000, cursor=cursor, ascending=True)
        for record in page.records:
            materialization = record.asset_materialization
            total += count(materialization.metadata, "labels_changed") if materialization else 0
        if not page.has_more:
            return total
        cursor = page.cursor


def retrain_request(instance: dg.DagsterInstance, share: float) -> dg.RunRequest | dg.SkipReason:
    """A run of the model once enough labels changed after its newest materialization."""
    entry = instance.get_asset_records([MODEL])
    record = entry[0].asset_entry.last_materialization_record if entry else None
    if record is None or record.asset_materialization is None:
        return dg.SkipReason("no model yet: the first one comes from the training cron or a click")
    planned = entry[0].asset_entry.last_planned_materialization_storage_id
    if planned is not None and planned > record.storage_id:
        return dg.SkipReason("a movie_rating_model run is already planned or running")
    labelled = count(record.asset_materialization.metadata, "labelled_movies")
    if not labelled:
        return dg.SkipReason("the newest model has no `labelled_movies` metadata: the cron retrains it")
    changed = labels_changed_since(instance, record.storage_id)
    ratio = changed / labelled
    if ratio < share:
        return dg.SkipReason(f"{changed} of {labelled} labels changed ({ratio:.1%} < {share:.0%})")
    return dg.RunRequest(
        run_key=f"labels-after-{record.storage_id}",  # one retrain per model version
        tags={"movie_platform/retrain_reason": f"{changed} of {labelled} labels changed ({ratio:.1%})"},
    )


@dg.sensor(
    name="retrain_on_label_changes",
    target=dg.AssetSelection.assets(MODEL),
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains movie_rating_model once MOVIE_RETRAIN_SHARE (default 10%) of its labels changed "
    "in change syncs since it last trained. MOVIE_RETRAIN_SHARE=off leaves the sensor out.",
)
def retrain_on_label_changes(context: dg.SensorEvaluationContext):
    return retrain_request(context.instance, retrain_share() or DEFAULT_RETRAIN_SHARE)


def retrain_sensors(environ=os.environ) -> list:
    """The sensor unless MOVIE_RETRAIN_SHARE=off (a bad value fails the code location's load, naming it)."""
    return [retrain_on_label_changes] if retrain_share(environ) is not None else []
