"""Accounts, orders, matching, positions and trade-update events of the sandbox.

(Foundation only: accounts and authentication. Orders and matching are being built on it.)
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from .clock import Clock, Sessions


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Engine:
    def __init__(self, *, market, clock: Clock, sessions: Sessions, db: str | None = None,
                 default_cash: float = 100_000.0):
        self.market = market
        self.clock = clock
        self.sessions = sessions
        self.db = db
        self.default_cash = default_cash
        self._keys: dict[str, tuple[bytes, str]] = {}   # key_id -> (sha256(secret), account id)
        self.accounts: dict[str, dict] = {}

    def has_key(self, key_id: str) -> bool:
        return key_id in self._keys

    def authenticate(self, key_id: str | None, secret: str | None) -> str | None:
        """The account id for a key pair, or None when the pair is unknown."""
        entry = self._keys.get(key_id or "")
        if entry is None or secret is None or not hmac.compare_digest(entry[0], _digest(secret)):
            return None
        return entry[1]

    def create_account(self, key_id: str, secret: str, *, cash: float | None = None) -> str:
        account_id = str(uuid.uuid4())
        self._keys[key_id] = (_digest(secret), account_id)
        self.accounts[account_id] = {"id": account_id, "cash": self.default_cash if cash is None else cash}
        return account_id

    def ensure_account(self, key_id: str, secret: str) -> str:
        """The account for this key pair, created with the default cash on first use."""
        return self.authenticate(key_id, secret) or self.create_account(key_id, secret)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def catch_up(self) -> None:
        pass
