"""The online store's bulk encoders and decoders agree with Feast's protos and redis-py's wire format.

The writer builds Redis commands as bytes with Arrow and the reader decodes values with numpy;
a byte off in either would write keys the Feast SDK cannot read, so both are compared here with
the reference implementations on values that exercise every varint length and sign.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from feast.protos.feast.types.Value_pb2 import Value
from redis.connection import Connection

from movie_assets.resources.online_writer import (
    RespBatch,
    decode_values,
    double_values,
    encode_arrow,
    int64_values,
)

EDGES = [0, 1, 127, 128, 16383, 16384, 2024, -1, -5, 2**40, 2**63 - 1, -(2**63)]


def test_int64_and_double_values_are_feasts_bytes_and_decode_back():
    rng = np.random.default_rng(17)
    ints = np.array(EDGES + list(rng.integers(-(2**63), 2**63 - 1, 500, dtype="int64")), dtype="int64")
    assert int64_values(ints).to_pylist() == [Value(int64_val=int(v)).SerializeToString() for v in ints]
    reals = np.array([0.0, -1.5, 1e300, -0.0, 5e-324, *rng.normal(size=200)])
    assert double_values(reals).to_pylist() == [Value(double_val=float(v)).SerializeToString() for v in reals]
    mixed = pa.array([*int64_values(ints).to_pylist(), *double_values(reals).to_pylist(), b"", None], pa.binary())
    decoded = decode_values(mixed)
    assert decoded[: len(ints)].tolist() == [float(v) for v in ints]
    assert decoded[len(ints) : len(ints) + len(reals)].tolist() == reals.tolist()
    assert np.isnan(decoded[-2:]).all(), "an empty ValueProto and a missing field read as NaN"


def test_nulls_and_nan_become_empty_valueprotos_as_in_feast():
    column = pa.chunked_array([[1.5, None, float("nan")]], pa.float64())
    assert encode_arrow(column, "DOUBLE").to_pylist() == [Value(double_val=1.5).SerializeToString(), b"", b""]
    ints = pa.chunked_array([[3, None]], pa.int64())
    assert encode_arrow(ints, "INT64").to_pylist() == [Value(int64_val=3).SerializeToString(), b""]


def test_built_commands_are_the_bytes_redis_py_sends():
    keys = [b"movie\x00\x01key", b"\r\n*odd$", b""]
    batch = RespBatch(keys)
    values = pa.array([b"v1", b"", b"\x00\xff"], pa.binary())
    built = batch.commands("HSET", batch.key_args, b"field", values, b"_ts:movie_features", values)
    pack = Connection().pack_command
    expected = [
        b"".join(pack("HSET", key, b"field", value, b"_ts:movie_features", value))
        for key, value in zip(keys, values.to_pylist(), strict=True)
    ]
    assert built.to_pylist() == expected
    assert batch.commands("HEXISTS", batch.key_args, b"f").to_pylist() == [
        b"".join(pack("HEXISTS", key, b"f")) for key in keys
    ]
