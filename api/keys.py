"""API keys: scoped to one collection (or all) and a role, stored hashed, shown once.

A key looks like ``rag_<id>_<secret>``. Only its id and the SHA-256 of the whole key are stored (in
``<data_dir>/keys.sqlite``, or with shared state in the shared database's ``rag_state.keys``); a 32-byte
random secret needs no salt or slow hash to resist guessing. Roles
are ordered: ``read`` (search, ask, chat, read documents) < ``write`` (also add and delete documents) <
``admin`` (also delete the collection; with collection ``*``, create collections and see all of them).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rag.core.errors import ConfigError
from rag.core.settings import Settings
from rag.core.shared_state import SharedRecords, state_target
from rag.core.storage import open_sqlite, sqlite_errors

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
ALL_COLLECTIONS = "*"
KEYS_FILE = "keys.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL, collection TEXT NOT NULL, role TEXT NOT NULL,
    name TEXT NOT NULL, created TEXT NOT NULL, revoked TEXT
);
"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's record (never the secret)."""

    id: str
    collection: str
    role: Role
    name: str
    created: str
    revoked: str | None = None

    def allows(self, collection: str | None, role: Role) -> bool:
        """Whether this key may act with ``role`` on ``collection`` (``None``: on the whole server)."""
        if self.revoked is not None or ROLES.index(self.role) < ROLES.index(role):
            return False
        if self.collection == ALL_COLLECTIONS:
            return True
        return collection is not None and collection == self.collection

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The keys of one data directory.

    Args:
        data_dir: where ``keys.sqlite`` lives.
        read_only: open without creating or writing anything (the API server only reads keys).
    """

    def __init__(self, data_dir: Path, *, read_only: bool = False) -> None:
        self.path = Path(data_dir) / KEYS_FILE
        self.read_only = read_only
        self.table = "keys"
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection | None:
        conn = open_sqlite(self.path, read_only=self.read_only)
        if conn is not None and not self.read_only:
            with sqlite_errors(self.path):
                conn.executescript(_SCHEMA)
        return conn

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in a transaction of its own: the rows it selects, or ``[(rowcount,)]``.

        With no keys file yet, a read returns no rows (a reader never creates it).
        """
        conn = self._connect()
        if conn is None:
            return []
        with self._lock, sqlite_errors(self.path):
            try:
                with conn:
                    cur = conn.execute(sql, params)
                    return cur.fetchall() if cur.description is not None else [(cur.rowcount,)]
            finally:
                conn.close()

    def create(self, collection: str, role: str, name: str = "") -> tuple[str, ApiKey]:
        """Make a key; returns ``(the key, its record)``. The key itself is never stored or shown again.

        Raises:
            ConfigError: an unknown role or an empty collection.
        """
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if not collection:
            raise ConfigError("a key needs a collection (or '*' for all)")
        key_id = secrets.token_hex(4)
        key = f"rag_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, collection, role, name, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))  # type: ignore[arg-type]
        self._execute(
            f"INSERT INTO {self.table}(id, hash, collection, role, name, created) VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, _digest(key), collection, role, name, record.created),
        )
        return key, record

    def list(self) -> list[ApiKey]:
        rows = self._execute(f"SELECT id, collection, role, name, created, revoked FROM {self.table} ORDER BY created, id")
        return [ApiKey(*row) for row in rows]

    def any_active(self) -> bool:
        return any(k.revoked is None for k in self.list())

    def enforced(self) -> bool:
        """Whether the API must check keys: once any key was created, even if all are revoked since.

        Revoking the last key must lock the server, not open it; deleting ``keys.sqlite`` opens it again.
        """
        return bool(self.list())

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; ``False`` if there is no such active key."""
        rows = self._execute(
            f"UPDATE {self.table} SET revoked = ? WHERE id = ? AND revoked IS NULL",
            (datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), key_id),
        )
        return bool(rows) and rows[0][0] > 0

    def verify(self, key: str) -> ApiKey | None:
        """The active key record for ``key``, or ``None`` for an unknown, malformed or revoked key."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "rag":
            return None
        rows = self._execute(
            f"SELECT id, hash, collection, role, name, created, revoked FROM {self.table} WHERE id = ?", (parts[1],)
        )
        row = rows[0] if rows else None
        if row is None or not hmac.compare_digest(row[1], _digest(key)) or row[6] is not None:
            return None
        return ApiKey(row[0], row[2], row[3], row[4], row[5], row[6])


class SharedKeyStore(KeyStore):
    """The keys of every replica, in the shared database's ``rag_state.keys`` table (same rules)."""

    def __init__(self, records: SharedRecords) -> None:
        self.records = records
        self.read_only = False
        self.table = "{state}.keys"

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.records.execute(sql, params)


def key_store(settings: Settings, *, read_only: bool = False, records: SharedRecords | None = None) -> KeyStore:
    """The key store ``settings`` name: ``keys.sqlite`` in ``data_dir``, or the shared database's table
    (through ``records`` if given, to share its connection)."""
    target = state_target(settings)
    if target is None:
        return KeyStore(settings.data_dir, read_only=read_only)
    return SharedKeyStore(records or SharedRecords(target))
