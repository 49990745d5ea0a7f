"""The one error the PostgreSQL layer raises."""


class PostgresError(RuntimeError):
    """PostgreSQL could not be reached or refused a write; names the table and partition."""
