"""The Feast CLI (feature_store.yaml) and the assets (FeastStore) configure the same store."""

from feast.repo_config import load_repo_config

from movie_assets.resources.feast import FEATURE_REPO, FeastStore


def test_assets_and_feast_cli_agree_on_project_ttl_and_registry(monkeypatch):
    monkeypatch.setenv("FEAST_REGISTRY_URL", "postgresql+psycopg2://movie@127.0.0.1:5432/feast")
    monkeypatch.setenv("FEAST_REDIS_CONNECTION", "127.0.0.1:6379,db=0")
    cli = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    ours = FeastStore(
        db_url="postgresql://movie@127.0.0.1:5432/movies", redis_url="redis://127.0.0.1:6379/0", storage_url="file:///x"
    ).repo_config()
    assert ours.project == cli.project
    assert ours.online_store.key_ttl_seconds == cli.online_store.key_ttl_seconds == 30 * 86400
    assert ours.online_store.connection_string == cli.online_store.connection_string
    assert ours.registry.path == cli.registry.path
    assert ours.registry.cache_ttl_seconds == cli.registry.cache_ttl_seconds
    assert ours.entity_key_serialization_version == cli.entity_key_serialization_version
