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
    # Nothing expires: the view has no TTL (Feast: 0) and Redis keys none (None: Feast sets no EXPIRE either).
    assert FEATURE_VIEW_TTL.total_seconds() == 0
    assert ours.online_store.key_ttl_seconds is None and cli.online_store.key_ttl_seconds is None
    assert ours.online_store.connection_string == cli.online_store.connection_string
    assert ours.registry.path == cli.registry.path
    assert ours.registry.cache_ttl_seconds == cli.registry.cache_ttl_seconds
    assert ours.entity_key_serialization_version == cli.entity_key_serialization_version


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:16379/0", {"host": "127.0.0.1", "port": "16379", "db": 0}),
        (
            # percent-encoded `p@ss:w/rd%,x` and a user: decoded, both passed (Feast's connection string dropped
            # the user and kept the password encoded, then could not carry the ',' at all)
            "redis://feast:p%40ss%3Aw%2Frd%25%2Cx@redis.internal:6380/2",
            {"host": "redis.internal", "port": "6380", "db": 2, "username": "feast", "password": "p@ss:w/rd%,x"},
        ),
        ("rediss://:s3cret@cache:6379", {"host": "cache", "port": "6379", "db": 0, "password": "s3cret", "ssl": True}),
        # values Feast's string parser would JSON-decode into another value: passed as the strings they are
        ("redis://:123456@h:1/0", {"host": "h", "port": "1", "db": 0, "password": "123456"}),
        ("redis://:true@h:1/0", {"host": "h", "port": "1", "db": 0, "password": "true"}),
        ("redis://:1e3@h:1/0", {"host": "h", "port": "1", "db": 0, "password": "1e3"}),
    ],
)
def test_feast_hands_redis_py_the_urls_host_db_user_and_password(url, expected, monkeypatch):
    """Through Feast's own client construction, for the assets (FeastStore) and the Feast CLI (the yaml + feast_env)."""
    from movie_assets.resources.feast import feast_env
    from movie_assets.resources.feast_private import RedisAuthOnlineStore

    ours = FeastStore(db_url="postgresql://m@h:1/movies", redis_url=url, storage_url="file:///x").repo_config()
    for name, value in feast_env({"MOVIE_DB_URL": "postgresql://m@h:1/movies", "MOVIE_REDIS_URL": url}).items():
        monkeypatch.setenv(name, value)
    cli = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    for config in (ours, cli):
        pool = RedisAuthOnlineStore()._get_client(config.online_store).connection_pool
        got = {k: pool.connection_kwargs.get(k) for k in ("host", "port", "db", "username", "password")}
        got["ssl"] = pool.connection_class.__name__ == "SSLConnection"
        assert got == {"username": None, "password": None, "ssl": False, **expected}, config.online_store.type
        assert "p@ss" not in repr(config.online_store)  # the password stays out of reprs (tracebacks, logs)


def test_a_url_that_is_not_redis_is_refused():
    with pytest.raises(ValueError, match=re.escape("must start with redis:// or rediss://")):
        redis_connection_string("http://h:6379/0")


def test_the_feast_version_the_redis_layout_was_checked_against_is_the_installed_one():
    """setup.py pins feast==0.67.*; the layout pin must move with it (after re-checking the layout)."""
    import feast

    check_feast_version()
    assert feast.__version__.startswith(FEAST_LAYOUT_VERSION + ".")
    check_feast_version(FEAST_LAYOUT_VERSION + ".9")
    for other in ("0.68.0", "1.67.0", "0.6.7"):
        with pytest.raises(FeastLayoutError, match=re.escape(f"Feast {other} is installed")):
            check_feast_version(other)
