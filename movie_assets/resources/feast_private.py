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

Feast is imported inside the functions and on first use of the auth store classes, never when
this module is: the code location imports it on every load (runs, code servers, CLI calls), and
Feast alone takes seconds to import; only steps that touch the online store need it.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any, Literal

from pydantic import StrictStr

from movie_assets.feature_definitions import import_feast

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
    return metadata.version("feast")


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
    import_feast()
    from feast.infra.online_stores.redis import _versioned_fv_name

    return _versioned_fv_name(view, config)


def field_hash(text: str) -> bytes:
    """Feast's hash field name of `view:feature`."""
    import_feast()
    from feast.infra.online_stores.helpers import _mmh3

    return _mmh3(text)


def redis_key(project: str, entity_key, version: int) -> bytes:
    """Feast's Redis key of a serialized EntityKey proto."""
    import_feast()
    from feast.infra.online_stores.helpers import _redis_key

    return _redis_key(project, entity_key, version)


def redis_client(online_store_config):
    """The redis-py client Feast itself builds from the online store config (cluster, sentinel, ssl, auth)."""
    return _auth_store_classes()["RedisAuthOnlineStore"]()._get_client(online_store_config)


# Feast's Redis store with the username and password as fields of their own. Feast's connection string
# (`host:port,password=...`) is split on `,` and its values JSON-decoded, so a password with a comma, or
# one that reads as JSON (`true`, `123`), cannot travel in it. Feast loads a custom online store from
# its class path (`type:` in feature_store.yaml, feast.AUTH_STORE_TYPE) and the `<class>Config` next to it:
# the module attributes below, built on first use (they subclass Feast's, so defining them imports Feast).
AUTH_STORE_CLASSES = ("RedisAuthOnlineStore", "RedisAuthOnlineStoreConfig")


def __getattr__(name: str) -> Any:
    if name in AUTH_STORE_CLASSES:
        return _auth_store_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _auth_store_classes() -> dict[str, type]:
    import_feast()
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

    class RedisAuthOnlineStoreConfig(RedisOnlineStoreConfig):
        """Feast's Redis config plus `username`/`password`, handed to redis-py as they are (empty = none)."""

        type: Literal["movie_assets.resources.feast_private.RedisAuthOnlineStore"] = (
            "movie_assets.resources.feast_private.RedisAuthOnlineStore"  # type: ignore[assignment]
        )
        username: StrictStr | None = None
        password: StrictStr | None = None

        def __repr_args__(self):
            """Never show the password (pydantic's repr would, in tracebacks and logs)."""
            return [(k, "***" if k == "password" and v else v) for k, v in super().__repr_args__()]

    class RedisAuthOnlineStore(RedisOnlineStore):
        """Feast's RedisOnlineStore (same keys, same client), authenticating with the config's own fields.

        Feast builds its clients from `_parse_connection_string`'s keyword arguments; the
        credentials are added to them, after the string was parsed, for every client it makes.
        """

        _auth: dict[str, str] = {}

        def _get_client(self, online_store_config):
            self._auth = _auth_kwargs(online_store_config)
            return super()._get_client(online_store_config)

        async def _get_client_async(self, online_store_config):
            self._auth = _auth_kwargs(online_store_config)
            return await super()._get_client_async(online_store_config)

        def _parse_connection_string(self, connection_string: str):  # type: ignore[override]
            startup_nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
            return startup_nodes, {**params, **self._auth}

    for cls in (RedisAuthOnlineStoreConfig, RedisAuthOnlineStore):
        cls.__qualname__ = cls.__name__  # importable by name from this module, as Feast and pickle look them up
    return {cls.__name__: cls for cls in (RedisAuthOnlineStore, RedisAuthOnlineStoreConfig)}


def _auth_kwargs(config) -> dict[str, str]:
    return {name: value for name in ("username", "password") if (value := getattr(config, name, None))}


def convert_rows(table, view, join_keys: dict) -> list:
    """What stock materialize writes for `table`: (EntityKey, {feature: ValueProto}, event time, created)."""
    import_feast()
    from feast.utils import _convert_arrow_to_proto

    return _convert_arrow_to_proto(table, view, join_keys)
