"""Cross-cutting policy applied once over all asset specs: automation conditions and freshness."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import dagster as dg

from movie_assets.automation.conditions import conditions
from movie_assets.automation.freshness import policies


def with_policies(assets: Sequence, scheduled_elsewhere: Collection[str] = ()) -> Sequence:
    """`assets` with the automation condition and freshness policy of each key, where one is set.

    Keys in `scheduled_elsewhere` (the assets an Airflow DAG materializes, when the bridge is on)
    get no condition: the DAG runs them, and automation racing its tasks would run each month twice.
    """
    by_key = {key: c for key, c in conditions().items() if key not in scheduled_elsewhere}
    freshness = policies()

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        key = spec.key.to_user_string()
        return spec.replace_attributes(
            automation_condition=by_key.get(key, spec.automation_condition),
            freshness_policy=freshness.get(key, spec.freshness_policy),
        )

    return dg.map_asset_specs(apply, assets)
