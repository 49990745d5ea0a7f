"""Feast's Redis layout, written with vectorized encoding and read without protobuf objects.

Feast stores an entity as one hash: key = serialized entity key + project, fields =
murmur3(view:feature) -> serialized ValueProto, plus `_ts:view` -> serialized
Timestamp. Feast builds a protobuf object for every value; here the same bytes are
produced from Arrow columns in bulk. Only DOUBLE and INT64 features are encoded here
(`SUPPORTED_TYPES`); a view with any other type is refused (`UnsupportedFeatureTypes`) and
`materialize_parallel` hands it to Feast's own materialize instead of mis-encoding it.
Every write compares one real row (key, every field, timestamp) with what Feast's own
conversion makes of it (`check_row`), and every reader its decoding with Feast's protos,
so a change in Feast's format fails loudly instead of writing keys the SDK cannot read.
Feast's private helpers come from `feast_private` only, which also pins the Feast version.
Newer-wins dedupe is kept as Feast does it. A key expires when its row's event time passes
the view's TTL (capped by the configured key TTL): the online store then forgets a movie
exactly when a point-in-time join stops seeing it.
"""

from __future__ import annotations

import datetime as dt
import struct
import time
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from movie_assets.resources import feast_private
from movie_assets.resources.feast_private import FeastLayoutError

DOUBLE_TAG = b"\x29"  # ValueProto field 5 (double_val), fixed64
INT64_TAG = b"\x20"  # ValueProto field 4 (int64_val), varint
SUPPORTED_TYPES = ("DOUBLE", "INT64")  # Feast ValueType names this module encodes byte-exactly
WRITE_BATCH = 2_000


class UnsupportedFeatureTypes(FeastLayoutError):
    """The view has a feature type this writer cannot encode exactly: use Feast's own materialize."""


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


def encode_column(column: pa.ChunkedArray, value_type: str) -> list[bytes]:
    """Serialized ValueProtos of one DOUBLE or INT64 column; a null becomes an empty ValueProto, as in Feast."""
    if value_type not in SUPPORTED_TYPES:
        raise UnsupportedFeatureTypes(f"cannot encode a {value_type} feature (only {', '.join(SUPPORTED_TYPES)})")
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    if value_type == "DOUBLE":
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


def layout_error(what: str, field: str) -> FeastLayoutError:
    return FeastLayoutError(
        f"{what} of field {field} differ from Feast {feast_private.installed_feast_version()}'s own encoding "
        f"(the layout was checked against Feast {feast_private.FEAST_LAYOUT_VERSION}): nothing was written. "
        "Materialize with FeatureStore.materialize until movie_assets/resources/online_writer.py is fixed "
        "for this Feast version."
    )


class FeastRedisLayout:
    """The byte layout of one feature view of one project, derived from Feast's own helpers."""

    def __init__(self, store, view):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        feast_private.check_feast_version()
        config = store.config
        self.view = view
        self.name = feast_private.versioned_view_name(view, config)
        self.ts_field = f"_ts:{self.name}".encode()
        self.types = {f.name: f.dtype.to_value_type().name for f in view.features}
        self.features = [(f.name, self.types[f.name] == "DOUBLE") for f in view.features]
        self.unsupported = [f"{name} ({kind})" for name, kind in self.types.items() if kind not in SUPPORTED_TYPES]
        self.field_keys = [feast_private.field_hash(f"{self.name}:{name}") for name, _ in self.features]
        (self.join_key,) = [column.name for column in view.entity_columns]
        self.join_key_types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        version = config.entity_key_serialization_version
        zero = feast_private.redis_key(
            config.project, EntityKey(join_keys=[self.join_key], entity_values=[Value(int64_val=0)]), version
        )
        self.project_suffix = config.project.encode()
        self.key_prefix = zero[: -(8 + len(self.project_suffix))]
        self._reference = (EntityKey, Value, version, config.project)

    def keys(self, ids: np.ndarray) -> list[bytes]:
        raw = ids.astype("<i8").tobytes()
        return [self.key_prefix + raw[i : i + 8] + self.project_suffix for i in range(0, len(raw), 8)]

    def ids_of(self, keys: list[bytes]) -> list[int]:
        """The movie ids of this view's keys (keys of other projects or layouts are left out)."""
        size = len(self.key_prefix) + 8 + len(self.project_suffix)
        start = len(self.key_prefix)
        return [
            struct.unpack_from("<q", key, start)[0]
            for key in keys
            if len(key) == size and key.startswith(self.key_prefix) and key.endswith(self.project_suffix)
        ]

    def refuse_unsupported(self) -> None:
        if self.unsupported:
            raise UnsupportedFeatureTypes(
                f"feature view {self.name} has features the fast Redis writer/reader cannot encode exactly: "
                f"{', '.join(self.unsupported)} (only {', '.join(SUPPORTED_TYPES)}); use Feast's own "
                "materialize/get_online_features for this view"
            )

    def check_encoding(self) -> None:
        """Our bytes must equal Feast's for keys and values, or nothing is written."""
        entity_key, value, version, project = self._reference
        for movie_id in (1, 290000001, 2**40 + 7):
            expected = feast_private.redis_key(
                project, entity_key(join_keys=[self.join_key], entity_values=[value(int64_val=movie_id)]), version
            )
            if self.keys(np.array([movie_id]))[0] != expected:
                raise layout_error("the entity keys", self.join_key)
        for number in (0, 1, 127, 128, 2024, -5, 2**40):
            if encode_int64(number) != value(int64_val=number).SerializeToString():
                raise layout_error(f"int64 values ({number})", "INT64")
        for real in (0.0, -1.5, 1e300):
            if encode_column(pa.chunked_array([[real]]), "DOUBLE")[0] != value(double_val=real).SerializeToString():
                raise layout_error(f"double values ({real})", "DOUBLE")
        for missing in (None, float("nan")):
            if encode_column(pa.chunked_array([[missing]], pa.float64()), "DOUBLE")[0] != value().SerializeToString():
                raise layout_error(f"missing values ({missing})", "DOUBLE")

    def check_row(self, table: pa.Table, row: int = 0) -> None:
        """One real row, encoded by us and by Feast's own materialize conversion: key, fields, timestamp."""
        from google.protobuf.timestamp_pb2 import Timestamp

        one = table.slice(row, 1)
        ((entity, values, event_time, _),) = feast_private.convert_rows(one, self.view, self.join_key_types)
        entity_key, _, version, project = self._reference
        if self.keys(one[self.join_key].to_numpy())[0] != feast_private.redis_key(project, entity, version):
            raise layout_error("the Redis keys", self.join_key)
        for (name, _), field_key in zip(self.features, self.field_keys, strict=True):
            if field_key != feast_private.field_hash(f"{self.name}:{name}"):
                raise layout_error("the hash field names", name)
            if encode_column(one[name], self.types[name])[0] != values[name].SerializeToString():
                raise layout_error("the values", name)
        stamp = Timestamp()
        stamp.FromDatetime(event_time if event_time.tzinfo else event_time.replace(tzinfo=dt.timezone.utc))
        if timestamp_bytes(int(event_nanos(one, self.view)[0])) != stamp.SerializeToString():
            raise layout_error("the event timestamps", self.ts_field.decode())


def event_nanos(table: pa.Table, view) -> np.ndarray:
    column = table[view.batch_source.timestamp_field]
    return pc.cast(pc.cast(column, pa.timestamp("ns", tz="UTC")), pa.int64()).to_numpy()


def expiry_ms(nanos: np.ndarray, view, key_ttl_seconds: int | None, now_ms: int) -> np.ndarray:
    """When each row's key expires (epoch ms): its event time + the view's TTL, never past now + key TTL.

    Reads treat a row past the view's TTL as missing anyway; expiring the key then keeps
    Redis from holding what nobody may read. -1 means no expiry (no TTL configured).
    """
    ttl = view.ttl.total_seconds() if view.ttl else 0
    expire = np.full(len(nanos), -1, dtype="int64")
    if ttl > 0:
        expire = nanos // 1_000_000 + int(ttl * 1000)
    if key_ttl_seconds:
        cap = now_ms + key_ttl_seconds * 1000
        expire = np.where(expire < 0, cap, np.minimum(expire, cap))
    return expire


def write_latest(store, view, table: pa.Table, key_ttl_seconds: int | None, now: dt.datetime | None = None) -> int:
    """Write the rows of `table` (one per entity) unless Redis already holds a newer or equal timestamp.

    A row already past the view's TTL is not written (a key set to expire in the past is
    deleted by Redis at once; the reader would treat it as missing anyway). Returns the
    rows written.
    """
    layout = FeastRedisLayout(store, view)
    layout.refuse_unsupported()
    layout.check_encoding()
    if table.num_rows == 0:
        return 0
    layout.check_row(table)
    client = feast_private.redis_client(store.config.online_store)
    keys = layout.keys(table[layout.join_key].to_numpy())
    nanos = event_nanos(table, view)
    now_ms = int((now.timestamp() if now else time.time()) * 1000)
    expire = expiry_ms(nanos, view, key_ttl_seconds, now_ms)
    stamps: dict[int, bytes] = {}
    written = 0
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), WRITE_BATCH):
            batch = range(start, min(start + WRITE_BATCH, len(keys)))
            # Encoded per batch: a million rows x 40 features encoded at once were 40M bytes objects (GiBs).
            chunk = table.slice(start, len(batch))
            columns = [encode_column(chunk[name], layout.types[name]) for name, _ in layout.features]
            for row in batch:
                pipe.hget(keys[row], layout.ts_field)
            previous = pipe.execute()
            for row, stored in zip(batch, previous, strict=True):
                new = int(nanos[row])
                if stored is not None and _stored_nanos(stored) >= new:
                    continue  # Feast's rule: skip older or same-instant rows
                expire_at = int(expire[row])
                if 0 <= expire_at <= now_ms:
                    continue  # past the view's TTL already: never served, so not written
                stamp = stamps.get(new) or stamps.setdefault(new, timestamp_bytes(new))
                mapping = dict(zip(layout.field_keys, (column[row - start] for column in columns), strict=True))
                mapping[layout.ts_field] = stamp
                pipe.hset(keys[row], mapping=mapping)
                if expire_at >= 0:
                    pipe.pexpireat(keys[row], expire_at)
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
    """A serialized ValueProto of a double or int64 feature as a float (NaN for an empty one).

    Any other ValueProto kind is refused rather than read as a number.
    """
    if not raw:
        return float("nan")
    if raw[:1] == DOUBLE_TAG and len(raw) == 9:
        return struct.unpack_from("<d", raw, 1)[0]
    if raw[:1] != INT64_TAG:
        raise FeastLayoutError(f"online value {raw[:16]!r} is neither a double nor an int64 ValueProto")
    number, shift = 0, 0
    for byte in raw[1:]:
        number |= (byte & 0x7F) << shift
        shift += 7
    return float(number - (1 << 64) if number >= 1 << 63 else number)


def feast_number(raw: bytes) -> float:
    """What Feast's own ValueProto parser reads from `raw`, as a float (NaN for an empty value)."""
    from feast.protos.feast.types.Value_pb2 import Value

    value = Value.FromString(raw)
    kind = value.WhichOneof("val")
    return float("nan") if kind is None else float(getattr(value, kind))


class OnlineReader:
    """Online features straight from Feast's Redis hashes: one pipelined HMGET per movie.

    Reads the same keys and fields as `FeatureStore.get_online_features`, without
    building a protobuf response. Build it once and reuse it: it keeps the layout and
    the Redis connection pool. It checks its decoding against Feast's protobuf parser when
    built (sample values and timestamps) and on the first stored row it reads.
    """

    def __init__(self, store, view):
        self.layout = FeastRedisLayout(store, view)
        self.layout.refuse_unsupported()
        self.layout.check_encoding()
        self.check_decoding()
        self.client = feast_private.redis_client(store.config.online_store)
        self.columns = [name for name, _ in self.layout.features]
        self.row_checked = False

    @staticmethod
    def check_decoding() -> None:
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        samples = [Value(double_val=v) for v in (0.0, -1.5, 1e300)] + [
            Value(int64_val=v) for v in (0, 1, 128, 2024, -5, 2**40)
        ]
        for sample in [*samples, Value()]:
            raw = sample.SerializeToString()
            if not np.isclose(decode_value(raw), feast_number(raw), equal_nan=True, rtol=0, atol=0):
                raise layout_error(f"decoded values ({feast_number(raw)!r})", sample.WhichOneof("val") or "empty")
        for nanos in (0, 1_700_000_000_123_456_000):
            stamp = Timestamp(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)
            if _stored_nanos(stamp.SerializeToString()) != nanos:
                raise layout_error("decoded timestamps", "_ts")

    def check_row(self, row: list) -> None:
        """One stored row read by us and by Feast's parser: the same numbers, or a clear failure."""
        for name, raw in zip(self.columns, row[:-1], strict=True):
            ours, feasts = decode_value(raw or b""), feast_number(raw or b"")
            if not (ours == feasts or (np.isnan(ours) and np.isnan(feasts))):
                raise layout_error("the decoded values", name)
        self.row_checked = True

    def read(self, ids, now: dt.datetime | None = None) -> pd.DataFrame:
        """Movies not online, or whose row is older than the view's TTL, come back as all-NaN rows.

        Feast's own online read serves a row past its TTL as present (feast-dev/feast#6821) while
        `get_historical_features` leaves it out; here serving agrees with training.
        """
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.layout.keys(np.asarray(ids, dtype="int64")):
                pipe.hmget(key, [*self.layout.field_keys, self.layout.ts_field])
            rows = pipe.execute()
        if not self.row_checked:
            stored = next((row for row in rows if row[-1] is not None), None)
            if stored is not None:
                self.check_row(stored)
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

    def stored_ids(self, count: int = 10_000) -> list[int]:
        """Every movie id with a key of this project and view in Redis (a SCAN over the key pattern)."""
        pattern = glob_escape(self.layout.key_prefix) + b"*" + glob_escape(self.layout.project_suffix)
        keys = list(self.client.scan_iter(match=pattern, count=count))
        return sorted(set(self.layout.ids_of(keys)))


def glob_escape(raw: bytes) -> bytes:
    """`raw` as a literal inside a Redis MATCH pattern."""
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in raw)


def read_latest(store, view, ids) -> pd.DataFrame:
    """One-off read (builds an OnlineReader)."""
    return OnlineReader(store, view).read(ids)


def delete_entities(store, view, ids) -> int:
    """Remove movies from the online store (their whole Redis hash): a deleted TMDB movie serves nothing."""
    keys = FeastRedisLayout(store, view).keys(np.asarray(list(ids), dtype="int64"))
    if not keys:
        return 0
    client = feast_private.redis_client(store.config.online_store)
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), WRITE_BATCH):
            pipe.delete(*keys[start : start + WRITE_BATCH])
        return int(sum(pipe.execute()))
