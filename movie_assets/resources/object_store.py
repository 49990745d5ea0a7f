"""The object store: S3 in deployments, a folder on a laptop, one code path for both.

Paths are `universal-pathlib` UPaths over fsspec, so `s3://bucket/prefix` (s3fs)
and `file:///folder` behave the same to every caller.
"""
from __future__ import annotations

from upath import UPath


def object_root(
    storage_url: str,
    s3_endpoint_url: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    region_name: str | None = None,
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
    if region_name:
        options["client_kwargs"] = {"region_name": region_name}
    return UPath(storage_url, **options)
