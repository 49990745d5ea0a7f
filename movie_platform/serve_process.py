"""`movie-platform serve` as a process of the stack: its port held before anything loads, its entry in `stack.json`.

uvicorn bound the port only after the registry and the model had loaded: with the port taken, serve
died 12 s in, on `[Errno 98]`, naming no setting. The socket is now bound first and handed to
uvicorn, and the process is recorded like `dev` and `lab`, so `status` lists it and `down` stops it.
"""

from __future__ import annotations

import errno
import os
import socket

from movie_platform.local_stack import DEFAULT_PORTS, Stack, StackError, service_entry, state_lock

PORT_ENV, DEFAULT_PORT = DEFAULT_PORTS["serve"]
BACKLOG = 2048  # uvicorn's default


def claim(stack: Stack, host: str, port: int) -> socket.socket:
    """The listening socket serve answers on, with this process recorded as the stack's `serve`.

    One serve per stack: a second one would replace the first's entry, and `down` would lose track of it.
    """
    with state_lock(stack.lock_file, lambda _msg: None):
        recorded = stack.load().get("services", {}).get("serve")
        if recorded and stack.owns("serve", recorded):
            raise StackError(
                f"serve already runs on {recorded['url']} (pid {recorded['pid']}), started by this stack: use it, "
                "or stop it (Ctrl-C in its terminal, or `movie-platform down`, which stops the stack too)"
            )
        sock = listening_socket(host, port)
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        stack.record_process("serve", service_entry("serve", url, os.getpid(), None), lock=False)
    return sock


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening: from here on the port is ours, while the registry and the model load."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closed run's TIME_WAIT is no conflict
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StackError(
                f"serve: port {port} on {host} is taken by another process. Stop that process, or set {PORT_ENV} "
                f"to a free port (`{PORT_ENV}={port + 1} make serve`; `movie-platform serve --port` overrides it)."
            ) from None
        raise StackError(
            f"serve cannot listen on {host}:{port} ({exc.strerror}): check --host and {PORT_ENV}"
        ) from None
    return sock
