"""The object store: S3 in deployments, a folder on a laptop, one code path for both.

Paths are `universal-pathlib` UPaths over fsspec, so `s3://bucket/prefix` (s3fs)
and `file:///folder` behave the same to every caller.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid
from contextlib import contextmanager

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_aws.s3 import S3Resource
from pydantic import Field
from upath import UPath

from movie_assets.object_layout import FEATURES_HISTORY_PATH, FEATURES_OBJECT_PATH
from movie_assets.settings import Settings, redact_url


def object_root(
    storage_url: str,
    s3_endpoint_url: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    region_name: str | None = None,
    aws_session_token: str | None = None,
) -> UPath:
    """The root UPath of the object store; an S3 endpoint (MinIO, the test server) is honoured.

    Credentials left as None fall back to botocore's usual chain (env, profile, IAM role).
    """
    if not storage_url.startswith("s3://"):
        return UPath(storage_url)
    options: dict = {}
    if s3_endpoint_url:
        options["endpoint_url"] = s3_endpoint_url
    if aws_access_key_id and aws_secret_access_key:
        options.update(key=aws_access_key_id, secret=aws_secret_access_key)
        if aws_session_token:
            options["token"] = aws_session_token
    if region_name:
        options["client_kwargs"] = {"region_name": region_name}
    return UPath(storage_url, **options)


def object_root_for(settings: Settings) -> UPath:
    """The object store root of a `Settings` (CLI, doctor, notebooks), with its S3 endpoint and credentials."""
    return object_root(
        settings.storage_url or "",
        settings.s3_endpoint_url,
        settings.aws_access_key_id,
        settings.aws_secret_access_key,
        settings.aws_region,
        settings.aws_session_token,
    )


def partition_month(partition_key: str) -> str:
    """`2024-03-01` -> `2024-03`: the release_month folder of the object-store layout."""
    return partition_key[:7]


class ObjectStoreError(RuntimeError):
    """The object store cannot be written: names the store, the bucket or key id, and what to do."""


class ObjectStore(dg.ConfigurableResource):
    """The object-store root (`MOVIE_STORAGE_URL`); with an `s3://` root, dagster-aws's S3
    resource supplies endpoint, credentials and region."""

    storage_url: str
    s3: S3Resource = Field(default_factory=S3Resource)

    @property
    def root(self) -> UPath:
        return object_root(
            self.storage_url,
            self.s3.endpoint_url,
            self.s3.aws_access_key_id,
            self.s3.aws_secret_access_key,
            self.s3.region_name,
            self.s3.aws_session_token,
        )

    def path_for(self, template: str, partition_key: str | None = None) -> UPath:
        return self.root / template.format(release_month=partition_month(partition_key) if partition_key else "")

    def write(self, template: str, partition_key: str | None, data: bytes) -> UPath:
        """Write one object atomically; a missing bucket or refused credentials fail with one clear message.

        On S3 it is one PutObject through the S3 resource's boto3 client: s3fs' file
        writer sends a multipart upload in 5 MB parts, 0.42x the speed of one PUT.
        """
        path = self.path_for(template, partition_key)
        with self.errors_named(f"{template} {partition_key or ''}".strip()):
            if is_local(path):
                write_atomically(path, data)
            else:
                bucket, key = _bucket_and_key(path)
                self.client().put_object(Bucket=bucket, Key=key, Body=data)
        return path

    def write_objects(self, template: str, items: dict) -> dict:
        """One object per partition key (bytes, or a DataFrame for `.parquet`); returns the write's metadata."""
        written, total = [], 0
        for key, value in sorted(items.items(), key=lambda kv: kv[0] or ""):
            data = _serialize(value, template)
            written.append(str(self.write(template, key, data)))
            total += len(data)
        return {
            "objects": len(written),
            "bytes": total,
            "path": dg.MetadataValue.path(
                written[0] if len(written) == 1 else str(self.path_for(template, None).parent.parent)
            ),
        }

    def read(self, template: str, partition_key: str | None) -> bytes:
        path = self.path_for(template, partition_key)
        with self.errors_named(f"{template} {partition_key or ''}".strip()):
            if is_local(path):
                return path.read_bytes()
            bucket, key = _bucket_and_key(path)
            return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def client(self):
        """The S3 resource's boto3 client, built once per configuration (building one costs ~50 ms)."""
        config = self.s3.model_dump_json()
        if config not in _CLIENTS:
            _CLIENTS[config] = self.s3.get_client()
        return _CLIENTS[config]

    @contextmanager
    def errors_named(self, what: str):
        """s3fs/botocore failures as ObjectStoreError: which store, which bucket or key id, and the fix."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        where = f"object store {redact_url(self.storage_url)}" + (
            f" at {self.s3.endpoint_url}" if self.s3.endpoint_url else ""
        )
        bucket = self.storage_url.removeprefix("s3://").split("/", 1)[0]
        missing_bucket = (
            f"{where}: bucket {bucket!r} does not exist. Create it (compose's minio-init does) or fix "
            f"MOVIE_STORAGE_URL; nothing was written for {what}."
        )
        refused = (
            f"{where} refused the credentials of AWS_ACCESS_KEY_ID={self.s3.aws_access_key_id or '(default chain)'}: "
            f"check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; nothing was written for {what}."
        )
        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise ObjectStoreError(missing_bucket) from None
            if code in (
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "403",
                "InvalidToken",
                "ExpiredToken",
            ):
                raise ObjectStoreError(refused) from None
            raise
        except EndpointConnectionError:
            raise ObjectStoreError(
                f"{where} is unreachable: start it or fix MOVIE_S3_ENDPOINT_URL; nothing was written for {what}."
            ) from None
        except FileNotFoundError:
            if is_local(self.root):
                raise
            raise ObjectStoreError(missing_bucket) from None
        except PermissionError:
            raise ObjectStoreError(refused) from None


_CLIENTS: dict[str, object] = {}


def _bucket_and_key(path: UPath) -> tuple[str, str]:
    bucket, _, key = str(path).removeprefix("s3://").partition("/")
    return bucket, key


class ObjectStoreIOManager(dg.ConfigurableIOManager):
    """Objects under the object store, one per partition, at the asset's `object_path` template.

    The asset returns `{partition_key: bytes | DataFrame}` (DataFrames become Parquet),
    so a single-run backfill over many months writes one object per month, which
    Dagster's stock UPathIOManager refuses. Local writes go to a temp file and are
    renamed into place; an S3 PUT is atomic by itself.
    """

    store: ObjectStore

    def path_for(self, template: str, partition_key: str | None) -> UPath:
        return self.store.path_for(template, partition_key)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        template = _template(context)
        items = obj if context.has_asset_partitions else {None: obj}
        if context.has_asset_partitions and set(items) != set(context.asset_partition_keys):
            missing = sorted(set(context.asset_partition_keys) - set(items))
            extra = sorted(set(items) - set(context.asset_partition_keys))
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} must return one object per partition of the run; missing "
                f"{missing[:3]}, unexpected {extra[:3]}"
            )
        context.add_output_metadata(self.store.write_objects(template, items))

    def load_object(self, template: str, partition_key: str | None):
        """One object as the asset returned it; a local Parquet file is read by Arrow straight from disk."""
        path = self.path_for(template, partition_key)
        if template.endswith(".parquet") and is_local(path):
            return pq.read_table(path.path).to_pandas()
        return _deserialize(self.store.read(template, partition_key), template)

    def load_input(self, context: dg.InputContext):
        upstream = context.upstream_output
        if upstream is None:
            raise dg.DagsterInvariantViolationError(
                f"ObjectStoreIOManager loads only asset outputs, but input {context.name!r} has no upstream output; "
                "give it an upstream asset (AssetIn) or load it with another IO manager"
            )
        template = _template(upstream)
        if not context.has_asset_partitions:
            return self.load_object(template, None)
        loaded = {}
        for key in context.asset_partition_keys:
            path = self.path_for(template, key)
            if not path.exists():
                raise FileNotFoundError(
                    f"object store has no {path} for {context.asset_key.to_user_string()} partition {key}; "
                    "materialize that partition first"
                )
            loaded[key] = self.load_object(template, key)
        return loaded


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def write_atomically(path: UPath, data: bytes) -> None:
    """Readers see the old object or the new one, never half of one."""
    if is_local(path):
        # Only folders need creating: on s3:// a mkdir would create a missing *bucket*.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp.path, path.path)
    else:
        path.write_bytes(data)


def _template(context: dg.OutputContext) -> str:
    template = (context.definition_metadata or {}).get("object_path")
    if not template:
        raise dg.DagsterInvariantViolationError(
            f"asset {context.asset_key.to_user_string()} has no `object_path` metadata"
        )
    return str(template.value if hasattr(template, "value") else template)


def _serialize(value, template: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, pd.DataFrame) and template.endswith(".parquet"):
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(value, preserve_index=False), buffer)
        return buffer.getvalue().to_pybytes()
    raise TypeError(f"cannot store {type(value).__name__} at {template}: return bytes, or a DataFrame for .parquet")


def _deserialize(data: bytes, template: str):
    if template.endswith(".parquet"):
        return pq.read_table(pa.BufferReader(data)).to_pandas()
    return data


def current_feature_rows(object_store: ObjectStore, partition_keys: list[str]) -> pd.DataFrame:
    """The months' current feature Parquet rows (what Feast serves now), with their `release_month` as a date."""
    frames = [
        pd.read_parquet(io.BytesIO(object_store.read(FEATURES_OBJECT_PATH, key))).assign(
            release_month=dt.date.fromisoformat(key)
        )
        for key in partition_keys
        if object_store.path_for(FEATURES_OBJECT_PATH, key).exists()
    ]
    frames = [frame for frame in frames if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["movie_id", "release_month"])


def drop_history_before(object_store: ObjectStore, partition_key: str, cutoff) -> int:
    """Delete the month's feature history objects superseded before `cutoff`; returns how many it keeps.

    An object is named by when its rows were superseded: a calendar month (`materialized=YYYY-MM`,
    rows superseded during it: gone once the month ended before `cutoff`) or, in the older layout, the
    run's time (`materialized=<UTC>`).
    """
    folder = object_store.path_for(FEATURES_HISTORY_PATH.replace("{materialized}", "x"), partition_key).parent
    if not folder.exists():
        return 0
    kept = 0
    for version in sorted(p for p in folder.iterdir() if p.name.endswith(".parquet")):
        name = version.name.removeprefix("materialized=").removesuffix(".parquet")
        stamp = pd.Timestamp(name, tz="UTC")
        superseded_by = stamp + pd.DateOffset(months=1) if len(name) == 7 else stamp  # end of a month's bucket
        if superseded_by <= pd.Timestamp(cutoff):
            version.unlink()
        else:
            kept += 1
    return kept
