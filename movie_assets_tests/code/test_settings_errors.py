"""Every variable is validated where it is read, and its error names it (issue 28). One line per case."""

from __future__ import annotations

import pytest

from movie_assets.settings import SettingError, Settings, port_setting


def partition_start(value: str):
    return Settings.from_env({"MOVIE_PARTITION_START": value})


def training_cron(value: str, monkeypatch):
    from movie_assets.automation.conditions import on_training_cron

    monkeypatch.setenv("MOVIE_TRAINING_CRON", value)
    return on_training_cron()


def stack_port(value: str, tmp_path):
    from movie_platform.local_stack import Stack

    return Stack(tmp_path, environ={"MOVIE_PG_PORT": value}).port("postgres")


def doctor_schema(value: str):
    from movie_platform.doctor import check_postgres

    return check_postgres(
        Settings.from_env({"MOVIE_DB_URL": "postgresql://u@127.0.0.1:1/db", "MOVIE_DB_SCHEMA": value})
    )


# case -> (how the value is read, the variable its error must name)
CASES = {
    "partition start not a date": (lambda mp, tmp: partition_start("garbage"), "MOVIE_PARTITION_START='garbage'"),
    "partition start mid-month": (lambda mp, tmp: partition_start("1990-01-15"), "MOVIE_PARTITION_START='1990-01-15'"),
    "training cron": (lambda mp, tmp: training_cron("every monday", mp), "MOVIE_TRAINING_CRON='every monday'"),
    "training cron out of range": (lambda mp, tmp: training_cron("61 * * * *", mp), "MOVIE_TRAINING_CRON"),
    "serve port": (
        lambda mp, tmp: port_setting("MOVIE_SERVE_PORT", 18000, {"MOVIE_SERVE_PORT": "abc"}),
        "MOVIE_SERVE_PORT='abc'",
    ),
    "serve port too big": (
        lambda mp, tmp: port_setting("MOVIE_SERVE_PORT", 18000, {"MOVIE_SERVE_PORT": "70000"}),
        "1 to 65535",
    ),
    "postgres port": (lambda mp, tmp: stack_port("abc", tmp), "MOVIE_PG_PORT='abc'"),
    "schema doctor would pass": (lambda mp, tmp: doctor_schema("Bad-Schema"), "MOVIE_DB_SCHEMA='Bad-Schema'"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_value_fails_naming_its_variable(case, monkeypatch, tmp_path):
    read, named = CASES[case]
    with pytest.raises(SettingError, match=None) as refused:
        read(monkeypatch, tmp_path)
    assert named in str(refused.value), str(refused.value)


def test_good_values_pass():
    assert Settings.from_env({"MOVIE_PARTITION_START": "1990-01-01"}).partition_start == "1990-01-01"
    assert Settings.from_env({}).partition_start is None
    assert port_setting("MOVIE_SERVE_PORT", 18000, {}) == 18000
    assert port_setting("MOVIE_SERVE_PORT", 18000, {"MOVIE_SERVE_PORT": "8080"}) == 8080
