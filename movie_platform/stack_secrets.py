"""The embedded stack's passwords: generated on first `up`, kept owner-only in `secrets.json` under the state dir.

Each password carries every character that URLs, Feast's connection string or a config file
treat specially (`@ : / % ,`), so every test that uses the stack goes through the encoding
paths of every client; none of them is a quote, a backslash or whitespace, so the
password also fits in a quoted line of redis.conf and of feature_store.yaml.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

SERVICES = ("postgres", "redis")
# Characters a URL, Feast's `host:port,password=...` string or a shell would misread when not encoded.
SPECIAL = "@:/%,"
ALPHABET = string.ascii_letters + string.digits
LENGTH = 32


def generate_password() -> str:
    """32 characters: 27 random letters/digits plus `@:/%,` at random places (~160 bits)."""
    chars = [secrets.choice(ALPHABET) for _ in range(LENGTH - len(SPECIAL))]
    for char in SPECIAL:
        chars.insert(secrets.randbelow(len(chars) + 1), char)
    return "".join(chars)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def secrets_file(state_dir: Path) -> Path:
    return Path(state_dir) / "secrets.json"


def load_or_create(state_dir: Path) -> dict[str, str]:
    """The stack's passwords, generating (and saving) those that do not exist yet."""
    path = secrets_file(state_dir)
    stored = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in SERVICES if not stored.get(name)]
    if missing or (path.stat().st_mode & 0o077):
        stored.update({name: generate_password() for name in missing})
        save(state_dir, stored)
    return stored


def save(state_dir: Path, stored: dict[str, str]) -> None:
    write_private(secrets_file(state_dir), json.dumps(stored, indent=2, sort_keys=True))


def redis_conf_line(password: str) -> str:
    """`requirepass "..."` for redis.conf, escaped so any password reads back unchanged."""
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'requirepass "{escaped}"\n'


def fingerprint(secret: str) -> str:
    """A short digest that tells two secrets apart without revealing either (stack.json signatures)."""
    import hashlib

    return hashlib.sha256(secret.encode()).hexdigest()[:12]
