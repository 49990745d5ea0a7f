"""Generated passwords, owner-only files, the local dagster.yaml and redaction, with `@ : / % ,` in the secrets."""

from __future__ import annotations

import stat
from urllib.parse import quote

import yaml

from movie_assets.settings import redact_env_value, redact_text, redact_url
from movie_platform.dagster_home import PASSWORD_VAR, dagster_env, storage_yaml
from movie_platform.stack_secrets import SPECIAL, generate_password, redis_conf_line, write_private


def test_generated_passwords_carry_every_url_special_character_and_differ():
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == 32 and set(SPECIAL) <= set(password)
        assert not set(password) & set("\"'\\ \t\n$`")  # fits a quoted line of redis.conf and feature_store.yaml
    assert redis_conf_line('a"b\\c') == 'requirepass "a\\"b\\\\c"\n'


def test_secret_files_are_created_owner_only(tmp_path):
    path = tmp_path / "state" / "secrets.json"
    write_private(path, "{}")
    write_private(path, '{"x": 1}')  # replaced, still 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == '{"x": 1}'


def test_dagster_yaml_reads_the_password_from_the_environment_and_dagster_builds_the_same_url():
    from dagster_postgres.utils import pg_url_from_config
    from sqlalchemy.engine import make_url

    password = "p@ss:w/rd%,x"
    url = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:15432/movies?sslmode=disable"
    text = storage_yaml(url, "dagster")
    assert password not in text and quote(password, safe="") not in text and f"env: {PASSWORD_VAR}" in text
    config = yaml.safe_load(text)["storage"]["postgres"]
    config["postgres_db"]["password"] = dagster_env(url)[PASSWORD_VAR]  # what Dagster reads from the env
    built = make_url(pg_url_from_config(config))
    assert (built.drivername, built.username, built.password, built.host, built.port, built.database) == (
        "postgresql+psycopg2",
        "postgres",
        password,
        "127.0.0.1",
        15432,
        "dagster",
    )
    assert built.query == {"sslmode": "disable"}


def test_redaction_hides_percent_encoded_passwords_with_or_without_a_user():
    password = quote("p@ss:w/rd%,x", safe="")
    for url in (f"redis://:{password}@127.0.0.1:16379/0", f"postgresql://postgres:{password}@h:1/movies"):
        for shown in (redact_url(url), redact_text(f"cannot connect to {url}: refused"), redact_env_value("X", url)):
            assert password not in shown and ":***@" in shown, shown
    assert redact_env_value("FEAST_REDIS_PASSWORD", "p@ss") == "***"
    assert redact_env_value("MOVIE_DAGSTER_PG_PASSWORD", "p@ss") == "***"
