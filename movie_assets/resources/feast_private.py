"""The only place the platform touches Feast's private API, and the Feast version that API was checked against.

Why private at all: Feast has no public call that writes or reads its Redis layout from Arrow
columns in bulk (stock `materialize` builds a protobuf object per value, 4.4x slower, see
benchmarks/RESULTS.md), so `online_writer` reproduces the layout itself. It needs Feast's own
key, field-hash and row-conversion helpers, which are underscore names and may change in any
release. They are imported here only, so a Feast upgrade has one module to re-check, and
`check_feast_version` refuses a Feast other than `FEAST_LAYOUT_VERSION` before any byte is
written or read. The writer and reader also compare their bytes with these helpers' on every
run (`online_writer.check_row` / `OnlineReader`), so a layout change that keeps the names fails
loudly instead of writing keys the Feast SDK cannot read.
"""

from __future__ import annotations

import feast
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from feast.utils import _convert_arrow_to_proto

# major.minor of the Feast whose Redis layout (entity key v3, murmur3 field keys, `_ts:<view>`)
# online_writer was checked against; setup.py pins feast==0.67.* to match.
FEAST_LAYOUT_VERSION = "0.67"

__all__ = [
    "FEAST_LAYOUT_VERSION",
    "check_feast_version",
    "convert_rows",
    "field_hash",
    "installed_feast_version",
    "redis_client",
    "redis_key",
    "versioned_view_name",
]


class FeastLayoutError(RuntimeError):
    """Our Redis bytes would differ from Feast's: nothing is written or read through the fast path."""


def installed_feast_version() -> str:
    return feast.__version__


def check_feast_version(installed: str | None = None) -> None:
    """Refuse a Feast whose major.minor is not the one the layout was checked against."""
    installed = installed or installed_feast_version()
    if ".".join(installed.split(".")[:2]) != FEAST_LAYOUT_VERSION:
        raise FeastLayoutError(
            f"Feast {installed} is installed, but the online store's Redis writer and reader "
            f"(movie_assets/resources/online_writer.py) were checked against Feast {FEAST_LAYOUT_VERSION}. "
            f"Install feast=={FEAST_LAYOUT_VERSION}.* (the pin in setup.py), or re-check the layout against "
            f"Feast {installed} (run movie_assets_tests/integration/test_features.py) and then update "
            "FEAST_LAYOUT_VERSION in movie_assets/resources/feast_private.py."
        )


def versioned_view_name(view, config) -> str:
    """The view name Feast uses in field hashes and `_ts:` (with a version suffix when versioning is on)."""
    return _versioned_fv_name(view, config)


def field_hash(text: str) -> bytes:
    """Feast's hash field name of `view:feature`."""
    return _mmh3(text)


def redis_key(project: str, entity_key, version: int) -> bytes:
    """Feast's Redis key of a serialized EntityKey proto."""
    return _redis_key(project, entity_key, version)


def redis_client(online_store_config):
    """The redis-py client Feast itself builds from the connection string (cluster, sentinel, ssl, auth)."""
    return RedisOnlineStore()._get_client(online_store_config)


def convert_rows(table, view, join_keys: dict) -> list:
    """What stock materialize writes for `table`: (EntityKey, {feature: ValueProto}, event time, created)."""
    return _convert_arrow_to_proto(table, view, join_keys)
