"""Passwords (stdlib ``hashlib.scrypt``, memory-hard) and opaque expiring tokens.

The database stores only the SHA-256 of a token, so a copy of the database
does not log anyone in. Token lookups are cached in memory until the token
expires, so an authenticated request costs no query after the first.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time

from .errors import ApiError, unauthorized
from .payloads import Credentials
from .store import Store

_R, _P = 8, 1


def hash_password(password: str, n: int) -> str:
    """``scrypt$<n>$<r>$<p>$<salt hex>$<key hex>``; the parameters travel with the hash so
    a later change of cost still verifies old hashes."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=_R, p=_P, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${_R}${_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison of *password* against a :func:`hash_password` string."""
    try:
        name, n, r, p, salt, key = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=256 * 1024 * 1024, dklen=len(key) // 2)
    except ValueError:
        return False
    return name == "scrypt" and hmac.compare_digest(got.hex(), key)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Registers users, logs them in, and maps a bearer token to its user."""

    def __init__(self, store: Store, scrypt_n: int, token_ttl_s: float) -> None:
        self._store = store
        self._n = scrypt_n
        self._ttl_ms = int(token_ttl_s * 1000)
        self._cache: dict[str, tuple[str, int]] = {}  # token hash -> (user, expires_at_ms)

    async def register(self, cred: Credentials) -> None:
        """Create the user; 409 if the name is taken."""
        # scrypt is deliberately slow: run it off the event loop.
        pw_hash = await asyncio.to_thread(hash_password, cred.password, self._n)
        if not await self._store.create_user(cred.user, pw_hash, _now_ms()):
            raise ApiError(409, "user_exists", f"user {cred.user!r} is already registered")

    async def login(self, cred: Credentials) -> dict[str, object]:
        """``{"token", "user", "expires_at"}``; 401 for an unknown user or a wrong password
        (the answer does not say which)."""
        stored = await self._store.password_hash(cred.user)
        ok = stored is not None and await asyncio.to_thread(verify_password, cred.password, stored)
        if not ok:
            raise unauthorized("unknown user or wrong password")
        token = secrets.token_urlsafe(32)
        expires = _now_ms() + self._ttl_ms
        await self._store.save_token(_token_hash(token), cred.user, expires)
        return {"token": token, "user": cred.user, "expires_at": expires}

    async def user_of(self, token: str | None) -> str:
        """The user *token* belongs to; 401 when missing, unknown or expired."""
        if not token or len(token) > 128:
            raise unauthorized()
        h = _token_hash(token)
        now = _now_ms()
        hit = self._cache.get(h)
        if hit is None:
            hit = await self._store.token_owner(h, now)
            if hit is None:
                raise unauthorized("invalid or expired token")
            self._cache[h] = hit
        if hit[1] <= now:
            self._cache.pop(h, None)
            raise unauthorized("invalid or expired token")
        return hit[0]


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _now_ms() -> int:
    return int(time.time() * 1000)
