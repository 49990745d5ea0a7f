"""Feast's Redis layout, written with vectorized encoding and read without protobuf objects.

Feast stores an entity as one hash: key = serialized entity key + project, fields =
murmur3(view:feature) -> serialized ValueProto, plus `_ts:view` -> serialized
Timestamp. Feast builds a protobuf object for every value; here the same bytes are
produced from Arrow columns in bulk. `check_encoding` compares them with Feast's
own encoder at start, so a change in Feast's format fails loudly instead of
writing keys the SDK cannot read. Newer-wins dedupe is kept as Feast does it.
"""

from __future__ import annotations

import datetime as dt
import struct
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DOUBLE_TAG = b"\x29"  # ValueProto field 5 (double_val), fixed64
INT64_TAG = b"\x20"  # ValueProto field 4 (int64_val), varint
WRITE_BATCH = 2_000


@lru_cache(maxsize=4096)
def encode_int64(value: int) -> bytes:
    """ValueProto(int64_val=value).SerializeToString(), for the repeated small ints of one-hots and years."""
    number = value & 0xFFFFFFFFFFFFFFFF
    out = bytearray(INT64_TAG)
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_column(column: pa.ChunkedArray, is_double: bool) -> list[bytes]:
    """Serialized ValueProtos of one feature column; a null becomes an empty ValueProto, as in Feast."""
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    if is_double:
        numbers = pc.fill_null(column, 0.0).to_numpy().astype("<f8")
        nulls = nulls | np.isnan(numbers)  # Feast writes NaN as an empty ValueProto too
        raw = numbers.tobytes()
        encoded = [DOUBLE_TAG + raw[i : i + 8] for i in range(0, len(raw), 8)]
    else:
        encoded = [encode_int64(v) for v in pc.fill_null(column, 0).to_numpy().tolist()]
    if nulls.any():
        for index in np.flatnonzero(nulls):
            encoded[index] = b""
    return encoded


def timestamp_bytes(nanos: int) -> bytes:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000).SerializeToString()


class FeastRedisLayout:
    """The byte layout of one feature view of one project, derived from Feast's own helpers."""

    def __init__(self, store, view):
        from feast.infra.online_stores.helpers import _mmh3, _redis_key
        from feast.infra.online_stores.redis import _versioned_fv_name
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        config = store.config
        self.view = view
        self.name = _versioned_fv_name(view, config)
        self.ts_field = f"_ts:{self.name}".encode()
        self.features = [(f.name, f.dtype.to_value_type().name == "DOUBLE") for f in view.features]
        self.field_keys = [_mmh3(f"{self.name}:{name}") for name, _ in self.features]
        (self.join_key,) = [column.name for column in view.entity_columns]
        version = config.entity_key_serialization_version
        zero = _redis_key(
            config.project, EntityKey(join_keys=[self.join_key], entity_values=[Value(int64_val=0)]), version
        )
        self.project_suffix = config.project.encode()
        self.key_prefix = zero[: -(8 + len(self.project_suffix))]
        self._reference = (_redis_key, EntityKey, Value, version, config.project)

    def keys(self, ids: np.ndarray) -> list[bytes]:
        raw = ids.astype("<i8").tobytes()
        return [self.key_prefix + raw[i : i + 8] + self.project_suffix for i in range(0, len(raw), 8)]

    def check_encoding(self) -> None:
        """Our bytes must equal Feast's for keys and values, or nothing is written."""
        redis_key, entity_key, value, version, project = self._reference
        for movie_id in (1, 290000001, 2**40 + 7):
            expected = redis_key(
                project, entity_key(join_keys=[self.join_key], entity_values=[value(int64_val=movie_id)]), version
            )
            if self.keys(np.array([movie_id]))[0] != expected:
                raise RuntimeError("Feast's Redis entity-key layout changed: use FeatureStore.materialize instead")
        for number in (0, 1, 127, 128, 2024, -5, 2**40):
            if encode_int64(number) != value(int64_val=number).SerializeToString():
                raise RuntimeError(f"int64 ValueProto encoding differs from Feast's for {number}")
        for real in (0.0, -1.5, 1e300):
            if encode_column(pa.chunked_array([[real]]), True)[0] != value(double_val=real).SerializeToString():
                raise RuntimeError(f"double ValueProto encoding differs from Feast's for {real}")
        for missing in (None, float("nan")):
            if encode_column(pa.chunked_array([[missing]], pa.float64()), True)[0] != value().SerializeToString():
                raise RuntimeError(f"missing-value ({missing}) ValueProto encoding differs from Feast's")


def write_latest(store, view, table: pa.Table, key_ttl_seconds: int | None) -> int:
    """Write the rows of `table` (one per entity) unless Redis already holds a newer or equal timestamp."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    layout = FeastRedisLayout(store, view)
    layout.check_encoding()
    client = RedisOnlineStore()._get_client(store.config.online_store)
    keys = layout.keys(table[layout.join_key].to_numpy())
    nanos = pc.cast(
        pc.cast(table[view.batch_source.timestamp_field], pa.timestamp("ns", tz="UTC")), pa.int64()
    ).to_numpy()
    stamps: dict[int, bytes] = {}
    written = 0
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), WRITE_BATCH):
            batch = range(start, min(start + WRITE_BATCH, len(keys)))
            # Encoded per batch: a million rows x 40 features encoded at once were 40M bytes objects (GiBs).
            chunk = table.slice(start, len(batch))
            columns = [encode_column(chunk[name], is_double) for name, is_double in layout.features]
            for row in batch:
                pipe.hget(keys[row], layout.ts_field)
            previous = pipe.execute()
            for row, stored in zip(batch, previous, strict=True):
                new = int(nanos[row])
                if stored is not None and _stored_nanos(stored) >= new:
                    continue  # Feast's rule: skip older or same-instant rows
                stamp = stamps.get(new) or stamps.setdefault(new, timestamp_bytes(new))
                mapping = dict(zip(layout.field_keys, (column[row - start] for column in columns), strict=True))
                mapping[layout.ts_field] = stamp
                pipe.hset(keys[row], mapping=mapping)
                if key_ttl_seconds:
                    pipe.expire(keys[row], key_ttl_seconds)
                written += 1
            pipe.execute()
    return written


def _stored_nanos(stored: bytes) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.ParseFromString(stored)
    return stamp.seconds * 1_000_000_000 + stamp.nanos


@lru_cache(maxsize=4096)
def decode_value(raw: bytes) -> float:
    """A serialized ValueProto of a double or int64 feature as a float (NaN for an empty one)."""
    if not raw:
        return float("nan")
    if raw[:1] == DOUBLE_TAG:
        return struct.unpack_from("<d", raw, 1)[0]
    number, shift = 0, 0
    for byte in raw[1:]:
        number |= (byte & 0x7F) << shift
        shift += 7
    return float(number - (1 << 64) if number >= 1 << 63 else number)


class OnlineReader:
    """Online features straight from Feast's Redis hashes: one pipelined HMGET per movie.

    Reads the same keys and fields as `FeatureStore.get_online_features`, without
    building a protobuf response. Build it once and reuse it: it keeps the layout and
    the Redis connection pool.
    """

    def __init__(self, store, view):
        from feast.infra.online_stores.redis import RedisOnlineStore

        self.layout = FeastRedisLayout(store, view)
        self.client = RedisOnlineStore()._get_client(store.config.online_store)
        self.columns = [name for name, _ in self.layout.features]

    def read(self, ids, now: dt.datetime | None = None) -> pd.DataFrame:
        """Movies not online, or whose row is older than the view's TTL, come back as all-NaN rows.

        Feast's own online read serves a row past its TTL as present (feast-dev/feast#6821) while
        `get_historical_features` leaves it out; here serving agrees with training.
        """
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.layout.keys(np.asarray(ids, dtype="int64")):
                pipe.hmget(key, [*self.layout.field_keys, self.layout.ts_field])
            rows = pipe.execute()
        values = np.array([[decode_value(raw or b"") for raw in row[:-1]] for row in rows], dtype="float64").reshape(
            len(rows), len(self.columns)
        )
        ttl = self.layout.view.ttl
        if ttl and ttl.total_seconds() > 0 and len(rows):
            oldest = int(((now or dt.datetime.now(dt.timezone.utc)) - ttl).timestamp() * 1_000_000_000)
            stale = np.array([row[-1] is not None and _stored_nanos(row[-1]) < oldest for row in rows])
            values[stale] = np.nan
        return pd.DataFrame(values, columns=self.columns, index=pd.Index(ids, name=self.layout.join_key))

    def present(self, ids, batch: int = 10_000) -> np.ndarray:
        """Which movies have an online row (their hash holds Feast's timestamp field); pipelined in batches."""
        found = np.zeros(len(ids), dtype=bool)
        for start in range(0, len(ids), batch):
            keys = self.layout.keys(np.asarray(ids[start : start + batch], dtype="int64"))
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hexists(key, self.layout.ts_field)
                found[start : start + len(keys)] = pipe.execute()
        return found


def read_latest(store, view, ids) -> pd.DataFrame:
    """One-off read (builds an OnlineReader)."""
    return OnlineReader(store, view).read(ids)


def delete_entities(store, view, ids) -> int:
    """Remove movies from the online store (their whole Redis hash): a deleted TMDB movie serves nothing."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    keys = FeastRedisLayout(store, view).keys(np.asarray(list(ids), dtype="int64"))
    if not keys:
        return 0
    client = RedisOnlineStore()._get_client(store.config.online_store)
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), WRITE_BATCH):
            pipe.delete(*keys[start : start + WRITE_BATCH])
        return int(sum(pipe.execute()))
