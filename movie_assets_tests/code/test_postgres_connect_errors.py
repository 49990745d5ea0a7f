"""A connection that waiting will not open fails the step at once; one that heals is left to the retry policy."""

import socket
import struct
import threading

import dagster as dg
import pytest

from movie_assets.resources.postgres import PostgresDatabase, PostgresError
from movie_assets.resources.postgres.errors import PostgresSettingsError
from movie_assets_tests.conftest import free_port

SSL_REQUEST = 80877103


def answer_once(fields: bytes) -> int:
    """A server on loopback that answers one connection's startup with PostgreSQL's ErrorResponse `fields`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve() -> None:
        conn, _ = sock.accept()
        with conn, sock:
            length, code = struct.unpack("!ii", conn.recv(8))
            if code == SSL_REQUEST:  # refuse TLS, then read the real startup packet
                conn.sendall(b"N")
                length = struct.unpack("!i", conn.recv(4))[0]
                conn.recv(length - 4)
            else:
                conn.recv(length - 8)
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def connect(url: str) -> None:
    with PostgresDatabase(url=url).connect("storing 2024-01"):
        pass


def test_a_refused_connection_fails_without_retries_naming_the_variable_and_no_password():
    with pytest.raises(PostgresSettingsError) as refused:
        connect(f"postgresql://movie:hunter2@127.0.0.1:{free_port()}/movies")
    assert isinstance(refused.value, dg.Failure) and refused.value.allow_retries is False
    message = str(refused.value)
    assert "unreachable while storing 2024-01" in message and "MOVIE_DB_URL" in message
    assert "hunter2" not in message


def test_a_wrong_password_fails_without_retries():
    port = answer_once(b'SFATAL\0C28P01\0Mpassword authentication failed for user "movie"\0\0')
    with pytest.raises(PostgresSettingsError, match="password authentication failed"):
        connect(f"postgresql://movie:hunter2@127.0.0.1:{port}/movies")


def test_a_server_starting_up_is_left_to_the_retry_policy():
    port = answer_once(b"SFATAL\0C57P03\0Mthe database system is starting up\0\0")
    with pytest.raises(PostgresError, match="starting up") as starting:
        connect(f"postgresql://movie:hunter2@127.0.0.1:{port}/movies")
    assert not isinstance(starting.value, dg.Failure)
