"""Password authentication of the embedded PostgreSQL: scram-sha-256 everywhere, no trust rule.

New data directories get it from initdb (`local_stack._start_postgres`). A data directory
created by an older version trusted every local connection; `secure_postgres` upgrades it in
place on `up`, keeping its data: the role gets the stack's password, pg_hba.conf's trust rules
become scram-sha-256 rules, and the server reloads them.
"""

from __future__ import annotations

import re
from pathlib import Path

TRUST = re.compile(r"^(\s*(?:local|host\w*)\s.*?\s)trust(\s*(?:#.*)?)$")
ROLE = "postgres"


class PostgresAuthError(RuntimeError):
    """The embedded PostgreSQL refuses the stack's password."""


def trust_rules(hba: Path) -> int:
    """How many rules of pg_hba.conf let a client in without a password."""
    return sum(1 for line in hba.read_text().splitlines() if TRUST.match(line))


def secure_postgres(pgdata: Path, port: int, password: str, log=print) -> None:
    """Give the role the password and turn trust rules into scram-sha-256 ones, then check the password works.

    The password reaches the server as a SCRAM verifier computed by libpq, so neither the
    statement nor a server log line ever holds it in clear.
    """
    import psycopg

    hba = pgdata / "pg_hba.conf"
    trusted = trust_rules(hba) if hba.exists() else 0
    if trusted:
        with psycopg.connect(
            host="127.0.0.1", port=port, user=ROLE, dbname="postgres", autocommit=True, connect_timeout=10
        ) as conn:
            _alter_password(conn, password)
            lines = [TRUST.sub(r"\1scram-sha-256\2", line) for line in hba.read_text().splitlines()]
            hba.write_text("\n".join(lines) + "\n")  # in place: owner and mode stay those of initdb's file
            conn.execute("select pg_reload_conf()")
        log(
            f"postgres: {pgdata} trusted local connections ({trusted} trust rules, from an older version): "
            f"role {ROLE} now has the stack's password and pg_hba.conf requires scram-sha-256; data kept"
        )
    try:
        psycopg.connect(
            host="127.0.0.1", port=port, user=ROLE, password=password, dbname="postgres", connect_timeout=10
        ).close()
    except psycopg.OperationalError as exc:
        if "password authentication failed" not in str(exc):
            raise
        raise PostgresAuthError(
            f"postgres: the server on 127.0.0.1:{port} ({pgdata}) refuses the password in secrets.json "
            "(replaced or deleted since the data directory got its password?). Restore the file from a backup, "
            "or set the role's password by hand (see the README, 'Rotating the embedded stack's passwords')"
        ) from None


def set_role_password(url: str, password: str) -> None:
    """Connect with `url` (the current password) and give its role `password` (rotation)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        _alter_password(conn, password)


def _alter_password(conn, password: str) -> None:
    """ALTER ROLE with a SCRAM verifier computed by libpq: the clear password never reaches the server."""
    from psycopg import sql

    verifier = conn.pgconn.encrypt_password(password.encode(), ROLE.encode(), b"scram-sha-256").decode()
    conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(ROLE), sql.Literal(verifier)))
