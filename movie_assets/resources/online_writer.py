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
Newer-wins dedupe is kept as Feast does it. The platform's view has no TTL and no key TTL,
so keys do not expire; should a view declare a TTL, a key expires when its row's event
time passes it (capped by a configured key TTL), as a point-in-time join stops seeing it.
"""

from __future__ import annotations

import datetime as dt
import struct
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from movie_assets.domain import clock
from movie_assets.feature_definitions import import_feast
from movie_assets.resources import feast_private
from movie_assets.resources.feast_private import FeastLayoutError

DOUBLE_TAG = b"\x29"  # ValueProto field 5 (double_val), fixed64
INT64_TAG = b"\x20"  # ValueProto field 4 (int64_val), varint
SUPPORTED_TYPES = ("DOUBLE", "INT64")  # Feast ValueType names this module encodes byte-exactly
WRITE_BATCH = 2_000
SMALL_READ = 8  # up to this many movies per read, values are decoded one by one (cheaper than numpy's set-up)


class UnsupportedFeatureTypes(FeastLayoutError):
    """The view has a feature type this writer cannot encode exactly: use Feast's own materialize."""


def encode_int64(value: int) -> bytes:
    """ValueProto(int64_val=value).SerializeToString(), through the same vectorized varint encoder as a column."""
    return int64_values(np.array([value], dtype="int64")).to_pylist()[0]


def int64_values(numbers: np.ndarray) -> pa.BinaryArray:
    """Serialized ValueProtos (tag + base-128 varint, two's complement for negatives) of int64s, without a
    Python object per value: every value's bytes are laid out in one matrix and the used cells kept."""
    rest = numbers.astype("int64").view("uint64").copy()
    cells = np.zeros((len(rest), 11), dtype="uint8")
    cells[:, 0] = INT64_TAG[0]
    lengths = np.ones(len(rest), dtype="int64")  # the tag
    width = 11
    for position in range(1, 11):
        if position > 1 and not rest.any():
            width = position  # the rest would be unused cells (one-hots and years need one or two bytes)
            break
        used = (rest != 0) | (position == 1)
        byte = (rest & 0x7F).astype("uint8")
        rest >>= np.uint64(7)
        cells[:, position] = byte | ((rest != 0).astype("uint8") << 7)
        lengths += used
    cells = cells[:, :width]
    keep = np.arange(width) < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype("int32")
    return pa.BinaryArray.from_buffers(pa.binary(), len(rest), [None, pa.py_buffer(offsets), pa.py_buffer(cells[keep])])


def double_values(numbers: np.ndarray) -> pa.Array:
    """Serialized ValueProtos (tag + little-endian IEEE 754) of doubles, as one 9-byte cell per value."""
    cells = np.empty((len(numbers), 9), dtype="uint8")
    cells[:, 0] = DOUBLE_TAG[0]
    cells[:, 1:] = numbers.astype("<f8").view("uint8").reshape(len(numbers), 8)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(9), len(numbers), [None, pa.py_buffer(cells)])
    return pc.cast(fixed, pa.binary())


def encode_arrow(column: pa.ChunkedArray | pa.Array, value_type: str) -> pa.Array:
    """Serialized ValueProtos of one DOUBLE or INT64 column; a null becomes an empty ValueProto, as in Feast."""
    if value_type not in SUPPORTED_TYPES:
        raise UnsupportedFeatureTypes(f"cannot encode a {value_type} feature (only {', '.join(SUPPORTED_TYPES)})")
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    if value_type == "DOUBLE":
        numbers = pc.fill_null(column, 0.0).to_numpy().astype("<f8")
        nulls = nulls | np.isnan(numbers)  # Feast writes NaN as an empty ValueProto too
        encoded = double_values(numbers)
    else:
        encoded = int64_values(pc.fill_null(column, 0).to_numpy())
    if nulls.any():
        encoded = pc.if_else(pa.array(nulls), pa.scalar(b"", pa.binary()), encoded)
    return encoded


def encode_column(column: pa.ChunkedArray, value_type: str) -> list[bytes]:
    """`encode_arrow` as Python bytes (the self-checks compare these with Feast's protos)."""
    return encode_arrow(column, value_type).to_pylist()


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
        import_feast()
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
        for number in (0, 1, 127, 128, 2024, -5, 2**40, 2**63 - 1, -(2**63)):
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
    """When each row's key expires (epoch ms): -1, never, for the platform's view (no TTL, no key TTL).

    With a view TTL: its event time + the TTL (reads treat an older row as missing anyway),
    never past now + a key TTL.
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
    rows written. Each batch's commands are built as Redis protocol bytes by Arrow
    (`RespBatch`) and sent in one piece: redis-py's per-command packing and per-reply
    parsing cost more than Redis' own work at a million rows.
    """
    layout = FeastRedisLayout(store, view)
    layout.refuse_unsupported()
    layout.check_encoding()
    if table.num_rows == 0:
        return 0
    layout.check_row(table)
    connection = RawRedis(feast_private.redis_client(store.config.online_store))
    ids = table[layout.join_key].to_numpy()
    nanos = event_nanos(table, view)
    now_ms = int((now or clock.now()).timestamp() * 1000)
    expire = expiry_ms(nanos, view, key_ttl_seconds, now_ms)
    written = 0
    for start in range(0, len(ids), WRITE_BATCH):
        stop = min(start + WRITE_BATCH, len(ids))
        batch = RespBatch(layout.keys(ids[start:stop]))
        previous = connection.run(batch.commands("HGET", batch.key_args, layout.ts_field), stop - start)
        stored = np.array([-1 if raw is None else _stored_nanos(raw) for raw in previous], dtype="int64")
        # Feast's rule: skip older or same-instant rows; and a row past the view's TTL is never served.
        write = (stored < nanos[start:stop]) & ~((expire[start:stop] >= 0) & (expire[start:stop] <= now_ms))
        if not write.any():
            continue
        # Encoded per batch: a million rows x 40 features encoded at once were GiBs.
        chunk = table.slice(start, stop - start)
        stamps = unique_stamps(nanos[start:stop])
        fields = [
            (field_key, encode_arrow(chunk[name], layout.types[name]))
            for (name, _), field_key in zip(layout.features, layout.field_keys, strict=True)
        ]
        hset = batch.commands(
            "HSET", batch.key_args, *[part for pair in fields for part in pair], layout.ts_field, stamps
        )
        expire_at = expire[start:stop]
        expires = expire_at >= 0
        pexpire = batch.commands("PEXPIREAT", batch.key_args, pc.cast(pa.array(expire_at), pa.string()))
        pexpire = pc.if_else(pa.array(expires), pexpire, pa.scalar(b"", pa.binary()))
        rows = pc.filter(pc.binary_join_element_wise(hset, pexpire, pa.scalar(b"", pa.binary())), pa.array(write))
        connection.run(rows, int(write.sum() + (write & expires).sum()))
        written += int(write.sum())
    return written


def unique_stamps(nanos: np.ndarray) -> pa.Array:
    """Feast's serialized Timestamp of each row, encoded once per distinct event time."""
    distinct, index = np.unique(nanos, return_inverse=True)
    return pa.array([timestamp_bytes(int(n)) for n in distinct], pa.binary()).take(pa.array(index))


EMPTY = pa.scalar(b"", pa.binary())


def bulk(value: bytes) -> bytes:
    """A RESP bulk string: `$<length>\\r\\n<bytes>\\r\\n`."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def bulk_column(values: pa.Array) -> pa.Array:
    """`bulk` of every value of an Arrow column, in C."""
    values = pc.cast(values, pa.binary())
    length = pc.cast(pc.cast(pc.binary_length(values), pa.string()), pa.binary())
    return pc.binary_join_element_wise(b"$", length, b"\r\n", values, b"\r\n", EMPTY)


class RespBatch:
    """Redis commands for a batch of keys, one command per key, built column-wise as RESP bytes."""

    def __init__(self, keys: list[bytes]):
        self.rows = len(keys)
        self.key_args = bulk_column(pa.array(keys, pa.binary()))

    def commands(self, name: str, *args: bytes | pa.Array) -> pa.Array:
        """One `name args...` per key; a bytes argument is the same for every key, an array is per key."""
        parts: list[pa.Scalar | pa.Array] = [
            pa.scalar(b"*%d\r\n%s" % (len(args) + 1, bulk(name.encode())), pa.binary())
        ]
        for arg in args:
            if isinstance(arg, bytes):
                parts.append(pa.scalar(bulk(arg), pa.binary()))
            else:
                parts.append(arg if arg is self.key_args else bulk_column(arg))
        return pc.binary_join_element_wise(*parts, EMPTY)


def _receive(sock, buffer: memoryview) -> int:
    """recv_into, its socket errors raised as redis-py's own (the run names Redis for those)."""
    import redis

    try:
        return sock.recv_into(buffer)
    except TimeoutError as exc:
        raise redis.TimeoutError(f"Timeout reading from Redis: {exc}") from exc
    except OSError as exc:
        raise redis.ConnectionError(f"Error reading from Redis: {exc}") from exc


class RawRedis:
    """Sends pre-built RESP bytes on one pooled redis-py connection and reads the replies with hiredis in bulk.

    redis-py's handshake (AUTH, SELECT, TLS) is kept; only the reply loop is ours, so a
    million replies cost no Python call each. A reply that is an error fails the write,
    naming Redis' own message; the connection is then dropped, not returned to the pool.
    """

    def __init__(self, client):
        self.pool = client.connection_pool

    def run(self, commands: pa.Array | bytes, replies: int) -> list:
        """Send every command of `commands` (RESP bytes, one or more commands per element); return `replies` replies."""
        import hiredis
        import redis

        connection = self.pool.get_connection()
        try:
            payload = commands if isinstance(commands, bytes) else b"".join(commands.to_pylist())
            connection.send_packed_command([payload], check_health=False)
            reader, buffer = hiredis.Reader(), memoryview(bytearray(1 << 16))
            out: list = []
            sock = connection._sock  # redis-py keeps the connected socket here; we read it directly
            while len(out) < replies:
                reply = reader.gets()
                if reply is False:
                    received = _receive(sock, buffer)
                    if not received:
                        raise redis.ConnectionError("Redis closed the connection before it had answered every command")
                    reader.feed(buffer[:received].tobytes())
                else:
                    out.append(reply)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self.pool.release(connection)
        errors = [reply for reply in out if isinstance(reply, hiredis.ReplyError)]
        if errors:
            raise redis.ResponseError(f"Redis refused {len(errors)} of {replies} online-store commands: {errors[0]}")
        return out


@lru_cache(maxsize=4096)
def _stored_nanos(stored: bytes) -> int:
    """Nanoseconds of a stored Feast timestamp (cached: a materialization stamps many rows alike)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.ParseFromString(stored)
    return stamp.seconds * 1_000_000_000 + stamp.nanos


@lru_cache(maxsize=4096)
def decode_value(raw: bytes) -> float:
    """A serialized ValueProto of a double or int64 feature as a float (NaN for an empty one).

    The per-value decoder, for a few movies (where numpy's per-call cost exceeds the work);
    `decode_values` does many at once. Any other ValueProto kind is refused rather than read
    as a number.
    """
    if not raw:
        return float("nan")
    if raw[:1] == DOUBLE_TAG and len(raw) == 9:
        return struct.unpack_from("<d", raw, 1)[0]
    if raw[:1] != INT64_TAG or len(raw) < 2:
        raise FeastLayoutError(f"online value {raw[:16]!r} is neither a double nor an int64 ValueProto")
    number, shift = 0, 0
    for byte in raw[1:]:
        number |= (byte & 0x7F) << shift
        shift += 7
    return float(number - (1 << 64) if number >= 1 << 63 else number)


def decode_values(values: pa.BinaryArray) -> np.ndarray:
    """Serialized ValueProtos of double or int64 features as floats (NaN for an empty or missing one).

    Decoded in bulk from Arrow's buffers: a double is its tag and 8 little-endian bytes, an
    int64 its tag and a base-128 varint. Any other ValueProto kind is refused rather than read
    as a number.
    """
    count = len(values)
    out = np.full(count, np.nan)
    if count == 0:
        return out
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype="int32")[values.offset : values.offset + count + 1]
    data = np.frombuffer(data_buffer, dtype="uint8") if data_buffer is not None else np.zeros(0, dtype="uint8")
    starts, lengths = offsets[:-1], np.diff(offsets)
    present = lengths > 0
    tags = np.zeros(count, dtype="uint8")
    tags[present] = data[starts[present]]
    doubles = present & (tags == DOUBLE_TAG[0]) & (lengths == 9)
    ints = present & (tags == INT64_TAG[0]) & (lengths >= 2) & (lengths <= 11)
    if (present & ~doubles & ~ints).any():
        raw = values[int(np.flatnonzero(present & ~doubles & ~ints)[0])].as_py()
        raise FeastLayoutError(f"online value {raw[:16]!r} is neither a double nor an int64 ValueProto")
    if doubles.any():
        cells = data[starts[doubles, None] + 1 + np.arange(8)]
        out[doubles] = np.ascontiguousarray(cells).view("<f8").ravel()
    if ints.any():
        width = int(lengths[ints].max()) - 1
        index = starts[ints, None] + 1 + np.arange(width)
        used = np.arange(width) < (lengths[ints] - 1)[:, None]
        cells = np.where(used, data[np.minimum(index, len(data) - 1)], 0).astype("uint64")
        shifts = (np.uint64(7) * np.arange(width, dtype="uint64"))[None, :]
        numbers = np.bitwise_or.reduce((cells & np.uint64(0x7F)) << shifts, axis=1)
        out[ints] = numbers.view("int64").astype("float64")
    return out


def feast_number(raw: bytes) -> float:
    """What Feast's own ValueProto parser reads from `raw`, as a float (NaN for an empty value)."""
    import_feast()
    from feast.protos.feast.types.Value_pb2 import Value

    value = Value.FromString(raw)
    kind = value.WhichOneof("val")
    return float("nan") if kind is None else float(getattr(value, kind))


class OnlineReader:
    """Online features straight from Feast's Redis hashes: one pipelined HGETALL per movie.

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
        self.connection = RawRedis(self.client)
        self.columns = [name for name, _ in self.layout.features]
        self.row_checked = False
        self.fields = [*self.layout.field_keys, self.layout.ts_field]

    def pick(self, reply: list) -> list:
        """The view's values and timestamp out of one HGETALL reply (field, value, field, value, ...).

        HGETALL, not HMGET: Redis finds each HMGET field by walking the small hash's list, 41
        walks per movie, where HGETALL walks it once. A hash this writer wrote holds the fields in
        the view's order, so the values are every second item; any other order is mapped by name.
        """
        if not reply:
            return [None] * len(self.fields)
        if reply[::2] == self.fields:
            return reply[1::2]
        by_name = dict(zip(reply[::2], reply[1::2], strict=True))
        return [by_name.get(name) for name in self.fields]

    @staticmethod
    def check_decoding() -> None:
        import_feast()
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        samples = [Value(double_val=v) for v in (0.0, -1.5, 1e300)] + [
            Value(int64_val=v) for v in (0, 1, 128, 2024, -5, 2**40, 2**63 - 1, -(2**63))
        ]
        raws = [sample.SerializeToString() for sample in [*samples, Value()]]
        in_bulk = decode_values(pa.array(raws, pa.binary()))
        for sample, raw, bulk_value in zip([*samples, Value()], raws, in_bulk, strict=True):
            expected = feast_number(raw)
            for ours in (decode_value(raw), bulk_value):  # both decoders: few movies and many
                if not np.isclose(ours, expected, equal_nan=True, rtol=0, atol=0):
                    raise layout_error(f"decoded values ({expected!r})", sample.WhichOneof("val") or "empty")
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
        values = self.read_values(ids, now)
        return pd.DataFrame(values, columns=self.columns, index=pd.Index(ids, name=self.layout.join_key))

    def read_values(self, ids, now: dt.datetime | None = None) -> np.ndarray:
        """`read` without the DataFrame: one row of feature values per id, in `columns` order (the serving path).

        One HGETALL per movie, pre-built and sent in one piece; the replies are parsed by hiredis
        and decoded in bulk (`decode_values`).
        """
        keys = self.layout.keys(np.asarray(ids, dtype="int64"))
        replies = self.connection.run(b"".join([b"*2\r\n$7\r\nHGETALL\r\n" + bulk(key) for key in keys]), len(keys))
        rows = [self.pick(reply) for reply in replies]
        if not self.row_checked:
            stored = next((row for row in rows if row[-1] is not None), None)
            if stored is not None:
                self.check_row(stored)
        width = len(self.columns)
        if len(rows) <= SMALL_READ:
            values = np.array([[decode_value(raw or b"") for raw in row[:-1]] for row in rows], dtype="float64")
            values = values.reshape(len(rows), width)
        else:
            fields = pc.list_slice(pa.array(rows, pa.list_(pa.binary())), 0, width)  # the timestamp is no value
            values = decode_values(pc.list_flatten(fields)).reshape(len(rows), width)
        ttl = self.layout.view.ttl
        if ttl and ttl.total_seconds() > 0 and len(rows):
            oldest = int(((now or clock.now()) - ttl).timestamp() * 1_000_000_000)
            stale = np.array([row[-1] is not None and _stored_nanos(row[-1]) < oldest for row in rows])
            values[stale] = np.nan
        return values

    def present(self, ids, batch: int = 10_000) -> np.ndarray:
        """Which movies have an online row (their hash holds Feast's timestamp field); pipelined in batches."""
        found = np.zeros(len(ids), dtype=bool)
        for start in range(0, len(ids), batch):
            keys = RespBatch(self.layout.keys(np.asarray(ids[start : start + batch], dtype="int64")))
            commands = keys.commands("HEXISTS", keys.key_args, self.layout.ts_field)
            found[start : start + keys.rows] = self.connection.run(commands, keys.rows)
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


def persist_keys(store, view, count: int = 10_000) -> int:
    """Drop the expiry of every key of the view; returns how many had one.

    Keys written while the view had a TTL keep their PEXPIREAT through later HSETs, so a
    movie would still vanish when it runs out. Called when the definitions are applied.
    """
    layout = FeastRedisLayout(store, view)
    client = feast_private.redis_client(store.config.online_store)
    pattern = glob_escape(layout.key_prefix) + b"*" + glob_escape(layout.project_suffix)
    keys = list(client.scan_iter(match=pattern, count=count))
    persisted = 0
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), WRITE_BATCH):
            for key in keys[start : start + WRITE_BATCH]:
                pipe.persist(key)
            persisted += int(sum(pipe.execute()))
    return persisted


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
