"""The Feast CLI (feature_store.yaml) and the assets (FeastStore) configure the same store."""

import re

import pytest
from feast.repo_config import load_repo_config

from movie_assets.feature_definitions import FEATURE_VIEW_TTL
from movie_assets.resources.feast import FEATURE_REPO, FeastStore, redis_connection_string
from movie_assets.resources.feast_private import FEAST_LAYOUT_VERSION, FeastLayoutError, check_feast_version


def test_assets_and_feast_cli_agree_on_project_ttl_and_registry(monkeypatch):
    monkeypatch.setenv("FEAST_REGISTRY_URL", "postgresql+psycopg2://movie@127.0.0.1:5432/feast")
    monkeypatch.setenv("FEAST_REDIS_CONNECTION", "127.0.0.1:6379,db=0")
    cli = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    ours = FeastStore(
        db_url="postgresql://movie@127.0.0.1:5432/movies", redis_url="redis://127.0.0.1:6379/0", storage_url="file:///x"
    ).repo_config()
    assert ours.project == cli.project
    # The key TTL is the view's TTL: the upper bound of a key's life (the writer counts it from the event time).
    assert ours.online_store.key_ttl_seconds == cli.online_store.key_ttl_seconds == FEATURE_VIEW_TTL.total_seconds()
    assert ours.online_store.connection_string == cli.online_store.connection_string
    assert ours.registry.path == cli.registry.path
    assert ours.registry.cache_ttl_seconds == cli.registry.cache_ttl_seconds
    assert ours.entity_key_serialization_version == cli.entity_key_serialization_version


@pytest.mark.parametrize(
    ("url", "host", "params"),
    [
        ("redis://127.0.0.1:16379/0", {"host": "127.0.0.1", "port": "16379"}, {"db": 0}),
        (
            # percent-encoded `p@ss:w/rd%` and a user: decoded, both passed (the password was kept encoded
            # and the user dropped before)
            "redis://feast:p%40ss%3Aw%2Frd%25@redis.internal:6380/2",
            {"host": "redis.internal", "port": "6380"},
            {"db": 2, "username": "feast", "password": "p@ss:w/rd%"},
        ),
        (
            "rediss://:s3cret@cache:6379",
            {"host": "cache", "port": "6379"},
            {"db": 0, "password": "s3cret", "ssl": True},
        ),
        ("redis://:123456@h:1/0", {"host": "h", "port": "1"}, {"db": 0, "password": 123456}),
    ],
)
def test_feast_parses_our_connection_string_back_to_the_urls_credentials(url, host, params):
    """Round trip through Feast's own parser: what it hands redis-py is the URL's host, db, user and password."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, parsed = RedisOnlineStore._parse_connection_string(redis_connection_string(url))
    assert nodes == [host] and parsed == params


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("redis://:a%2Cb@h:6379/0", "password in MOVIE_REDIS_URL contains ','"),
        ("redis://:true@h:6379/0", "password in MOVIE_REDIS_URL reads as JSON (bool)"),
        ("redis://:null@h:6379/0", "reads as JSON (NoneType)"),
        ("redis://:1e3@h:6379/0", "reads as JSON (float)"),
        ("redis://us%2Cer:pw@h:6379/0", "username in MOVIE_REDIS_URL contains ','"),
        ("http://h:6379/0", "must start with redis:// or rediss://"),
    ],
)
def test_a_redis_url_feast_cannot_carry_is_refused_naming_the_part_and_not_the_secret(url, part):
    with pytest.raises(ValueError, match=re.escape(part)) as refused:
        redis_connection_string(url)
    assert "a,b" not in str(refused.value) and "us,er" not in str(refused.value)


def test_the_feast_version_the_redis_layout_was_checked_against_is_the_installed_one():
    """setup.py pins feast==0.67.*; the layout pin must move with it (after re-checking the layout)."""
    import feast

    check_feast_version()
    assert feast.__version__.startswith(FEAST_LAYOUT_VERSION + ".")
    check_feast_version(FEAST_LAYOUT_VERSION + ".9")
    for other in ("0.68.0", "1.67.0", "0.6.7"):
        with pytest.raises(FeastLayoutError, match=re.escape(f"Feast {other} is installed")):
            check_feast_version(other)
