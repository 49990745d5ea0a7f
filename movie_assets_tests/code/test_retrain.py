"""The retrain sensor, evaluated on an instance's real event log: it asks once enough labels changed."""

import dagster as dg
import pytest

from movie_assets.automation.retrain import retrain_on_label_changes, retrain_sensors, retrain_share


def materialize(instance: dg.DagsterInstance, key: str, **metadata) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(key, partition="2024-03-01" if key == "movies_raw" else None, metadata=metadata)
    )


def evaluate(instance: dg.DagsterInstance):
    return retrain_on_label_changes(dg.build_sensor_context(instance=instance))


def test_the_model_retrains_once_a_tenth_of_its_labels_changed_and_not_before():
    with dg.instance_for_test() as instance:
        assert isinstance(evaluate(instance), dg.SkipReason), "no model: nothing to retrain"
        materialize(instance, "movies_raw", labels_changed=50)  # before the model: already learned
        materialize(instance, "movie_rating_model", labelled_movies=200)
        materialize(instance, "movies_raw", labels_changed=9)
        materialize(instance, "movies_raw", changed=30)  # a crawl or an old sync: no label count
        materialize(instance, "movies_raw", labels_changed=10)
        skip = evaluate(instance)
        assert isinstance(skip, dg.SkipReason) and "19 of 200" in skip.skip_message
        materialize(instance, "movies_raw", labels_changed=1)
        request = evaluate(instance)
        assert isinstance(request, dg.RunRequest) and request.run_key and request.run_key.startswith("labels-after-")
        assert "20 of 200" in request.tags["movie_platform/retrain_reason"]

        materialize(instance, "movie_rating_model", labelled_movies=200)
        assert isinstance(evaluate(instance), dg.SkipReason), "the new model learned those labels"


@pytest.mark.parametrize(("text", "share"), [("", 0.1), ("0.25", 0.25), ("1", 1.0), ("off", None)])
def test_the_share_is_configurable_and_can_be_off(text, share):
    assert retrain_share({"MOVIE_RETRAIN_SHARE": text}) == share
    assert bool(retrain_sensors({"MOVIE_RETRAIN_SHARE": text})) == (share is not None)


@pytest.mark.parametrize("text", ["1.5", "-0.1", "a lot"])
def test_a_bad_share_is_refused_with_its_name(text):
    with pytest.raises(ValueError, match="MOVIE_RETRAIN_SHARE"):
        retrain_share({"MOVIE_RETRAIN_SHARE": text})
