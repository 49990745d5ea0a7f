"""What is out of date, read from the event log each tick: the level-triggered operands of our automation.

Dagster's update operands (`newly_updated`, `any_deps_updated`) see the events between two
ticks, so whatever landed before the sensor's first tick, while the daemon was down, or
between a request and a restart, is never seen again. These operands compare what is
stored now (the newest materialization of each input partition against the partition's
own) and need no memory of earlier ticks: a sensor that missed ten events converges on its
next tick, and one that saw everything asks for nothing more.

They run in the code server (the automation sensor's `use_user_code_server=True`), like any
arbitrary-Python condition; each queries the event log once per asset and tick.

The check hold (`InputCheckFailed`, `InputChecksPending`) is level-triggered the same way: it
reads each input partition's newest blocking check evaluation and whether it targets the
partition's newest materialization, not the events since the last tick.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import dagster as dg

from movie_assets.dagster_private import latest_check_per_partition
from movie_assets.domain import clock

PLANNED: Final = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
MATERIALIZED: Final = dg.DagsterEventType.ASSET_MATERIALIZATION
STEP_STARTED: Final = dg.DagsterEventType.STEP_START
CODE_VERSION_TAG = "dagster/code_version"  # Dagster stamps each materialization with its asset's code version
DEFAULT_MAX_ATTEMPTS = 3


def max_attempts(environ: Mapping[str, str] = os.environ) -> int:
    """MOVIE_AUTOMATION_MAX_ATTEMPTS: failed runs of one partition, per input change, before automation waits."""
    raw = environ.get("MOVIE_AUTOMATION_MAX_ATTEMPTS") or str(DEFAULT_MAX_ATTEMPTS)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"MOVIE_AUTOMATION_MAX_ATTEMPTS must be a whole number >= 1, got {raw!r}")
    return int(raw)


def latest_ids(instance: dg.DagsterInstance, key: dg.AssetKey, partitioned: bool, event) -> dict[str | None, int]:
    """Partition (None when unpartitioned) -> storage id of its newest `event` (materialization or plan)."""
    if partitioned:
        return {partition: id_ for partition, id_ in instance.get_latest_storage_id_by_partition(key, event).items()}
    records = instance.get_asset_records([key])
    entry = records[0].asset_entry if records else None
    if entry is None:
        return {}
    if event == PLANNED:
        planned = entry.last_planned_materialization_storage_id
        return {None: planned} if planned else {}
    record = entry.last_materialization_record
    return {None: record.storage_id} if record else {}


def as_of(materialized: int | None, planned: int | None) -> int | None:
    """The event-log position a partition's stored value reflects: its run's plan, which precedes reading inputs.

    A parent materialized while that run was reading counts as newer, so it is not lost. When the newest
    plan has no materialization after it (a failed run), the stored value is the materialization's own.
    """
    if materialized is None:
        return None
    return planned if planned is not None and planned < materialized else materialized


def run_ids(instance: dg.DagsterInstance, key: dg.AssetKey, storage_ids: list[int]) -> dict[int, str]:
    """Storage id -> the run that wrote that materialization (runless reports have none)."""
    found: dict[int, str] = {}
    unique = sorted(set(storage_ids))
    for start in range(0, len(unique), 500):
        for summary in instance.get_asset_event_summary_records(
            MATERIALIZED, asset_key=key, storage_ids=unique[start : start + 500]
        ):
            if summary.run_id:
                found[summary.storage_id] = summary.run_id
    return found


def step_starts(instance: dg.DagsterInstance, run_id: str, step_key: str) -> list[int]:
    """Storage ids of the step's starts in the run (a retried step starts more than once), ascending.

    A run's starts are read once per evaluation: the steps of one run (a month's clean, features and
    scores) share them.
    """
    cache_key = ("step_starts", run_id)
    if cache_key not in _states:
        records = instance.get_records_for_run(run_id, of_type=STEP_STARTED).records
        _states[cache_key] = [(record.event_log_entry.step_key, record.storage_id) for record in records]
    return sorted(storage_id for key, storage_id in _states[cache_key] if key == step_key)


def blocking_checks(graph, key: dg.AssetKey) -> list[dg.AssetCheckKey]:
    """The blocking checks of an asset: a month failing one of them is not carried down."""
    return sorted((k for k in graph.get(key).check_keys if graph.get(k).blocking), key=lambda k: k.name)


def input_held(
    instance: dg.DagsterInstance, graph, key: dg.AssetKey, newest: Mapping[str | None, int], months: set[str]
) -> dict[str, str]:
    """Month -> "failed" or "pending" for the months of `key` (among `months`) that automation must not carry down.

    Failed: a blocking check's newest evaluation of the month failed and targeted the month's newest
    materialization (a newer materialization, or a newer passing evaluation, lifts it). Pending: the run
    that wrote that materialization is not finished and has neither planned nor logged every blocking
    check of the month (a crawl plans its check steps when it starts; an op job logs them as it goes).
    Known months are kept for the evaluation: one query per input asset, whichever children read it.
    """
    cache = _states.setdefault(("input_held", key), {})
    todo = sorted(m for m in months if m not in cache and newest.get(m) is not None)
    if todo:
        checks = blocking_checks(graph, key)
        rows = {(row.check_key, row.partition): row for row in latest_check_per_partition(instance, checks, todo)}
        writers = run_ids(instance, key, [newest[m] for m in todo])
        running = (
            {
                run.run_id
                for run in instance.get_runs(filters=dg.RunsFilter(run_ids=sorted(set(writers.values()))))
                if not run.is_finished
            }
            if writers
            else set()
        )
        for month in todo:
            mine = [rows.get((check, month)) for check in checks]
            writer = writers.get(newest[month])
            if any(r and r.status == "FAILED" and r.target_storage_id == newest[month] for r in mine):
                cache[month] = "failed"
            elif writer in running and any(r is None or r.run_id != writer for r in mine):
                cache[month] = "pending"
            else:
                cache[month] = ""
    return {m: cache[m] for m in months if cache.get(m)}


class StorageState:
    """One asset's stored state and its inputs', queried once per evaluation."""

    def __init__(self, context: dg.AutomationContext):
        view = context.asset_graph_view
        self.instance = view.instance
        self.graph = context.asset_graph
        self.key = context.key
        self.partitions_def = self.graph.get(self.key).partitions_def
        partitioned = self.partitions_def is not None
        materialized = latest_ids(self.instance, self.key, partitioned, MATERIALIZED)
        planned = latest_ids(self.instance, self.key, partitioned, PLANNED)
        self.materialized, self.planned = materialized, planned
        self.as_of = self.read_as_of()
        self.parents = {
            parent: self.materialized_ids(parent)
            for parent in self.graph.get(self.key).parent_entity_keys
            if self.graph.has(parent) and self.graph.get(parent).is_materializable
        }

    def materialized_ids(self, parent: dg.AssetKey) -> dict[str | None, int]:
        """A parent's newest materialization ids: from its own state when this evaluation has one
        (parents are evaluated first), else queried."""
        state = _states.get(parent)
        if isinstance(state, StorageState):
            return state.materialized
        return latest_ids(self.instance, parent, self.graph.get(parent).partitions_def is not None, MATERIALIZED)

    def plans_of_materializing_runs(self, partitions: list) -> dict:
        """Partition -> the plan of the run that wrote its newest materialization, where a later run failed.

        The newest plan then belongs to the failed run; the stored value reflects the earlier run's plan.
        """
        if not partitions:
            return {}
        writers = run_ids(self.instance, self.key, [self.materialized[p] for p in partitions])
        plan_of: dict = {}
        for run in set(writers.values()):
            for record in self.instance.get_asset_event_summary_records(PLANNED, asset_key=self.key, run_id=run):
                plan_of[(run, record.partition)] = record.storage_id
        found = {}
        for partition in partitions:
            plan_id = plan_of.get((writers.get(self.materialized[partition]), partition))
            if plan_id is not None and plan_id < self.materialized[partition]:
                found[partition] = plan_id
        return found

    def read_as_of(self) -> dict[str | None, int | None]:
        """Partition -> the event-log position its stored value reflects: the start of the step that wrote it.

        The step reads its inputs after it starts, so an input materialized while it ran counts as newer
        (not lost), and one materialized before it started, even after its run was created (a queued run,
        a run a restarted daemon submitted), was read. A runless report reflects itself. On run-sharded
        storage (SQLite), whose per-run ids are not comparable with the index's, the run's plan stands in
        for its start: an input landing between a run's creation and its start then counts as newer.
        """
        if self.instance.event_log_storage.is_run_sharded:  # SQLite: a run's event ids are its own, not global
            found = {p: as_of(m, self.planned.get(p)) for p, m in self.materialized.items()}
            later = [p for p, m in self.materialized.items() if self.planned.get(p, 0) > m]
            return {**found, **self.plans_of_materializing_runs(later)}
        writers = run_ids(self.instance, self.key, list(self.materialized.values()))
        step = self.key.to_python_identifier()
        found = {}
        for partition, materialized in self.materialized.items():
            starts = step_starts(self.instance, writers[materialized], step) if materialized in writers else []
            before = [storage_id for storage_id in starts if storage_id < materialized]
            found[partition] = before[-1] if before else materialized
        return found

    def input_ids(self, partition: str | None) -> list[tuple[dg.AssetKey, int]]:
        """(input, storage id of its newest materialization) for each input of `partition` that has one."""
        found = []
        for parent, ids in self.parents.items():
            if self.graph.get(parent).partitions_def is None:
                newest = ids.get(None)
            elif partition is None:  # an unpartitioned child reads every month
                newest = max(ids.values(), default=None)
            else:  # the same release-month partitions on both sides
                newest = ids.get(partition)
            if newest is not None:
                found.append((parent, newest))
        return found

    def newest_input(self, partition: str | None) -> int | None:
        return max((storage_id for _, storage_id in self.input_ids(partition)), default=None)

    def out_of_date(self, partitions) -> dict[str | None, int]:
        """Partition -> newest input id, for each partition an input was materialized after (or never built).

        An input that the partition's own newest run materialized (earlier in the same run) is what
        that run read, not news: a month's clean-then-features run leaves both current.
        """
        newer: dict[str | None, list[tuple[dg.AssetKey, int]]] = {}
        for partition in partitions:
            own = self.as_of.get(partition)
            found = [(parent, i) for parent, i in self.input_ids(partition) if own is None or i > own]
            if found:
                newer[partition] = found
        if not newer:
            return {}
        own_runs = run_ids(self.instance, self.key, [self.materialized[p] for p in newer if p in self.materialized])
        wanted: dict[dg.AssetKey, list[int]] = {}
        for found in newer.values():
            for parent, storage_id in found:
                wanted.setdefault(parent, []).append(storage_id)
        input_runs = {parent: run_ids(self.instance, parent, ids) for parent, ids in wanted.items()}
        candidates: dict[str | None, list[tuple[dg.AssetKey, int]]] = {}
        for partition, found in newer.items():
            own_run = own_runs.get(self.materialized.get(partition, -1))
            news = [(parent, i) for parent, i in found if not own_run or input_runs[parent].get(i) != own_run]
            if news:
                candidates[partition] = news
        restated = self.restatements(candidates, input_runs)
        stale = {}
        for partition, news in candidates.items():
            left = [i for parent, i in news if (parent, partition) not in restated]
            if left:
                stale[partition] = max(left)
        return stale

    def restatements(
        self, candidates: Mapping[str | None, list[tuple[dg.AssetKey, int]]], input_runs: Mapping
    ) -> set[tuple[dg.AssetKey, str | None]]:
        """(input, month) pairs whose newest input materialization restates one the month's stored value read.

        A range crawl reports each month as soon as it is stored, then once more with the range's result
        (`assets/ingest.py`). A month built from the first report is current: the same run materialized
        the same month before this month's step started, and no other run materialized it in between.
        """
        groups: dict[tuple[dg.AssetKey, str], list[str]] = {}
        for partition, news in candidates.items():
            for parent, storage_id in news:
                run = input_runs[parent].get(storage_id)
                monthly = self.graph.get(parent).partitions_def is not None  # a model above the months restates nothing
                if partition is not None and monthly and run and self.as_of.get(partition) is not None:
                    groups.setdefault((parent, run), []).append(partition)
        found: set[tuple[dg.AssetKey, str | None]] = set()
        for (parent, run), partitions in groups.items():
            by_run: dict[str | None, list[int]] = {}
            for record in self.instance.get_asset_event_summary_records(MATERIALIZED, asset_key=parent, run_id=run):
                by_run.setdefault(record.partition, []).append(record.storage_id)
            read: dict[str, tuple[int, int]] = {}  # month -> (the report its stored value read, the restatement)
            for partition in partitions:
                own, newest = self.as_of[partition], self.parents[parent][partition]
                earlier = [i for i in by_run.get(partition, []) if i < newest and own is not None and i < own]
                if earlier:
                    read[partition] = (max(earlier), newest)
            if not read:
                continue
            others = {
                record.partition
                for record in self.instance.get_asset_event_summary_records(
                    MATERIALIZED,
                    asset_key=parent,
                    after_storage_id=min(first for first, _ in read.values()),
                    before_storage_id=max(last for _, last in read.values()),
                )
                if record.run_id != run
                and record.partition in read
                and read[record.partition][0] < record.storage_id < read[record.partition][1]
            }
            found |= {(parent, partition) for partition in read if partition not in others}
        return found

    def failed_attempts(self, partitions, since: float | None = None) -> dict:
        """Partition -> failed runs since both its newest materialization and its newest input landed.

        Every run planned after those that left no materialization failed (or is the one running now).
        One query per asset: the plans after the earliest such point, counted per partition. `since`
        (a timestamp) also ignores plans before it: the training cron's newest tick.
        """
        after = {}
        for partition in partitions:
            materialized = self.materialized.get(partition) or 0
            if (self.planned.get(partition) or 0) > materialized:
                after[partition] = max(materialized, self.newest_input(partition) or 0)
        if not after:
            return {}
        plans = self.instance.get_asset_event_summary_records(
            PLANNED, asset_key=self.key, after_storage_id=min(after.values())
        )
        runs: dict = {}
        for plan in plans:
            if plan.partition in after and plan.storage_id > after[plan.partition]:
                if since is None or plan.timestamp >= since:
                    runs.setdefault(plan.partition, set()).add(plan.run_id)
        return {partition: len(ids) for partition, ids in runs.items()}

    def input_holds(self, partitions) -> dict[str | None, str]:
        """Partition -> why an input it reads is held: "failed" (a blocking check failed on the input
        partition's newest value) or "pending" (the run that wrote that value is still going and has not
        checked it yet: an op job logs a month's checks just after its materialization).

        A monthly child reads its own month; an unpartitioned one every month, of which only those newer
        than its stored value are news. One check query per input asset and evaluation (`input_held`).
        """
        reads: dict[str | None, list[tuple[dg.AssetKey, str]]] = {}
        for partition in partitions:
            for parent, ids in self.parents.items():
                if self.graph.get(parent).partitions_def is None or not blocking_checks(self.graph, parent):
                    continue
                if partition is None:
                    own = self.as_of.get(None)
                    months = [p for p, i in ids.items() if p is not None and (own is None or i > own)]
                else:
                    months = [partition] if partition in ids else []
                reads[partition] = reads.get(partition, []) + [(parent, month) for month in months]
        wanted: dict[dg.AssetKey, set[str]] = {}
        for pairs in reads.values():
            for parent, month in pairs:
                wanted.setdefault(parent, set()).add(month)
        held = {
            parent: input_held(self.instance, self.graph, parent, self.parents[parent], months)
            for parent, months in wanted.items()
        }
        found: dict[str | None, str] = {}
        for partition, pairs in reads.items():
            reasons = {held[parent][month] for parent, month in pairs if month in held[parent]}
            if reasons:
                found[partition] = "failed" if "failed" in reasons else "pending"
        return found

    def subset(self, context: dg.AutomationContext, partitions) -> dg.EntitySubset:
        if self.partitions_def is None:
            return context.candidate_subset if None in partitions else context.get_empty_subset()
        keys = {p for p in partitions if p is not None}
        found = context.asset_graph_view.get_subset_from_partition_keys(self.key, self.partitions_def, keys)
        return context.candidate_subset.compute_intersection(found)


_states: dict = {}


def storage_state(context: dg.AutomationContext) -> StorageState:
    """One StorageState per asset and evaluation, shared by its operands: one snapshot, queried once."""
    view = context.asset_graph_view
    if _states.get("view") is not view:  # a new evaluation (the view is held, so its id is not reused)
        _states.clear()
        _states["view"] = view
    if context.key not in _states:
        _states[context.key] = StorageState(context)
    return _states[context.key]


def candidate_partitions(context: dg.AutomationContext) -> list[str | None]:
    subset = context.candidate_subset
    if not subset.is_partitioned:
        return [None] if not subset.is_empty else []
    return [*sorted(subset.expensively_compute_partition_keys())]


class StoredStateCondition(dg.AutomationCondition):
    """An operand that reads the event log as it is now and keeps no cursor of its own."""

    @property
    def requires_cursor(self) -> bool:
        return False


class InputsNewer(StoredStateCondition):
    """An input partition was materialized after this partition's stored value was computed, or it never was."""

    @property
    def name(self) -> str:
        return "inputs_newer_than_stored"

    @property
    def description(self) -> str:
        return "an input partition was materialized after this partition's last run started (or it was never built)"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        state = storage_state(context)
        stale = state.out_of_date(candidate_partitions(context))
        return dg.AutomationResult(context=context, true_subset=state.subset(context, stale))


class FailedTooOften(StoredStateCondition):
    """Its runs failed MOVIE_AUTOMATION_MAX_ATTEMPTS times since its newest input and value landed: wait for a fix.

    With a cron (the training schedule), only failures since its newest tick count: next week tries again.
    """

    def __init__(self, cron: str | None = None):
        self._cron = cron

    @property
    def name(self) -> str:
        since = "cron_tick" if self._cron else "inputs_changed"
        return f"failed_{max_attempts()}_times_since_{since}"

    @property
    def description(self) -> str:
        since = "the newest tick of its cron" if self._cron else "its newest input landed"
        return (
            f"its runs failed {max_attempts()} times since {since}; automation asks again after the next change "
            "(or tick) or a successful run by hand (MOVIE_AUTOMATION_MAX_ATTEMPTS)"
        )

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        state, limit = storage_state(context), max_attempts()
        since = None
        if self._cron:
            view = context.asset_graph_view
            since = view.compute_previous_cron_tick(cron_schedule=self._cron, cron_timezone="UTC").timestamp()
        failed = state.failed_attempts(candidate_partitions(context), since)
        given_up = [p for p, count in failed.items() if count >= limit]
        return dg.AutomationResult(context=context, true_subset=state.subset(context, given_up))


class InputCheckFailed(StoredStateCondition):
    """An input partition it reads failed a blocking storage check on its newest value: it waits for a fix.

    Dagster's `check_failed()` is not used: for partitioned checks (1.13.27) a partition materialized and
    checked between two ticks can stay in its cursor's failed subset after it passed.
    """

    @property
    def name(self) -> str:
        return "input_blocking_check_failed"

    @property
    def description(self) -> str:
        return (
            "a blocking check of an input partition failed on its newest materialization (the failed run, or the "
            "input's Checks tab, names the rows); it runs again once the input is fixed and checked again"
        )

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        state = storage_state(context)
        held = state.input_holds(candidate_partitions(context))
        failed = [p for p, why in held.items() if why == "failed"]
        return dg.AutomationResult(context=context, true_subset=state.subset(context, failed))


class InputChecksPending(StoredStateCondition):
    """The run that wrote an input partition is still going and has not checked it yet: wait for its checks."""

    @property
    def name(self) -> str:
        return "input_checks_not_in_yet"

    @property
    def description(self) -> str:
        return (
            "the run that wrote an input partition's newest value is not finished and has not logged its "
            "blocking checks of it yet"
        )

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        state = storage_state(context)
        held = state.input_holds(candidate_partitions(context))
        pending = [p for p, why in held.items() if why == "pending"]
        return dg.AutomationResult(context=context, true_subset=state.subset(context, pending))


class CodeVersionDiffers(StoredStateCondition):
    """The asset's code version differs from the one a partition's newest materialization was built with."""

    @property
    def name(self) -> str:
        return "code_version_differs_from_stored"

    @property
    def description(self) -> str:
        return "the asset's code version is not the one this partition's newest materialization recorded"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        current = context.asset_graph.get(context.key).code_version
        if current is None:
            return dg.AutomationResult(context=context, true_subset=context.get_empty_subset())
        state = storage_state(context)
        built_with = code_versions(state.instance, context.key, state.materialized)
        differs = [p for p in candidate_partitions(context) if p in built_with and built_with[p] != current]
        return dg.AutomationResult(context=context, true_subset=state.subset(context, differs))


def code_versions(instance: dg.DagsterInstance, key: dg.AssetKey, newest: Mapping) -> dict:
    """Partition -> the code version its newest materialization recorded (None: none recorded)."""
    by_id = {storage_id: partition for partition, storage_id in newest.items()}
    ids = sorted(by_id)
    found: dict = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk)
        ).records
        for record in records:
            materialization = record.asset_materialization
            tags = (materialization.tags or {}) if materialization is not None else {}
            found[by_id[record.storage_id]] = tags.get(CODE_VERSION_TAG)
    return found


class InputRequestedThisTick(StoredStateCondition):
    """An input is requested on this tick, in a run that this one cannot join: wait for it to land.

    Dagster's `will_be_requested` is true only for inputs executable in the same run (a month and
    its month), so an unpartitioned input (a new model) or a monthly input of an unpartitioned
    asset would not hold the asset back, and it would run on what is being replaced.
    """

    def __init__(self, unpartitioned_inputs_only: bool):
        self._unpartitioned_only = unpartitioned_inputs_only

    @property
    def name(self) -> str:
        which = "an_unpartitioned_input" if self._unpartitioned_only else "an_input"
        return f"{which}_requested_this_tick"

    @property
    def description(self) -> str:
        return "an input is requested on this tick, in another run: this waits until it has landed"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        graph = context.asset_graph
        inputs = [
            parent
            for parent in graph.get(context.key).parent_entity_keys
            if graph.has(parent) and not (self._unpartitioned_only and graph.get(parent).partitions_def is not None)
        ]
        requested = any(
            subset is not None and not subset.is_empty
            for subset in (context.request_subsets_by_key.get(parent) for parent in inputs)
        )
        return dg.AutomationResult(
            context=context, true_subset=context.candidate_subset if requested else context.get_empty_subset()
        )


def built_at(record: dg.EventLogRecord) -> float:
    """When the platform's clock (domain/clock.py) read as the value was computed: its `built_at` metadata.

    Dagster stamps events with the wall clock; the tick is computed at the evaluation time, which a
    simulation moves. Materializations without the entry (older ones) fall back to the event's time.
    """
    materialization = record.asset_materialization
    entry = materialization.metadata.get(clock.BUILT_AT) if materialization is not None else None
    return float(entry.value) if isinstance(entry, dg.TimestampMetadataValue) else record.timestamp


class NotBuiltSinceCronTick(StoredStateCondition):
    """The newest tick of MOVIE_TRAINING_CRON (or the given schedule) came after the newest materialization."""

    @property
    def name(self) -> str:
        return f"not_built_since_cron_tick({self._cron})"

    @property
    def description(self) -> str:
        return "the newest tick of its cron schedule came after its newest materialization (or it was never built)"

    def __init__(self, cron: str):
        self._cron = cron

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        tick = context.asset_graph_view.compute_previous_cron_tick(cron_schedule=self._cron, cron_timezone="UTC")
        records = context.asset_graph_view.instance.get_asset_records([context.key])
        record = records[0].asset_entry.last_materialization_record if records else None
        due = record is None or built_at(record) < tick.timestamp()
        return dg.AutomationResult(
            context=context, true_subset=context.candidate_subset if due else context.get_empty_subset()
        )
