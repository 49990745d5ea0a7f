"""The errors the PostgreSQL layer raises."""

import dagster as dg


class PostgresError(RuntimeError):
    """PostgreSQL could not be reached or refused a write; names the table and partition."""


class PostgresSettingsError(PostgresError, dg.Failure):
    """No connection opens, and waiting will not open one: refused, unknown host, wrong password or database.

    A Dagster `Failure` without retries: the step fails at once with the variable to fix, instead of
    sitting out its retry policy's minutes (as a 401 or a refused connection from TMDB does). A
    timeout, a server starting up or shutting down, or one out of connections stays a plain
    `PostgresError`, which the retry policy retries.
    """

    def __init__(self, message: str):
        dg.Failure.__init__(self, description=message, allow_retries=False)
