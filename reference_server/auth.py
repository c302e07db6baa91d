"""Passwords (stdlib ``hashlib.scrypt``, memory-hard) and opaque expiring tokens.

The database stores only the SHA-256 of a token, so a copy of the database
does not log anyone in. Token lookups are cached in memory until the token
expires, so an authenticated request costs no query after the first.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets

from .clock import SYSTEM, Clock
from .config import ServerConfig
from .errors import ApiError, unauthorized
from .payloads import Credentials
from .store import Store
from .throttle import TokenBucket

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


def too_many_logins(wait_s: float) -> ApiError:
    """429 for a throttled login; ``retry_after_ms`` says when one may be tried again."""
    return ApiError(429, "rate_limited", "too many failed logins for this account or address: wait and retry",
                    retry_after_ms=max(1, math.ceil(wait_s * 1000)))


class Authenticator:
    """Registers users, logs them in and out, and maps a bearer token to its user.

    Failed logins are throttled per account name (registered or not: the answer must not
    tell which) and per client address; a throttled attempt is refused before the password
    is checked. An unknown user's password is checked against a dummy hash of the same cost,
    so a failed login takes as long whether the user exists or not. Every expiry is read from
    the injected :class:`~reference_server.clock.Clock`."""

    def __init__(self, store: Store, scrypt_n: int, token_ttl_s: float, clock: Clock = SYSTEM,
                 config: ServerConfig | None = None) -> None:
        cfg = config or ServerConfig()
        self._store = store
        self._n = scrypt_n
        self._ttl_ms = int(token_ttl_s * 1000)
        self.clock = clock
        self._cache_ms = int(cfg.token_cache_s * 1000)
        self._cache: dict[str, tuple[str, int, int]] = {}  # token hash -> (user, expires_at_ms, checked_ms)
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), scrypt_n)
        self._per_account = Throttle(cfg.login_failures_per_account_per_s, cfg.login_failures_per_account_burst,
                                     clock)
        self._per_ip = Throttle(cfg.login_failures_per_ip_per_s, cfg.login_failures_per_ip_burst, clock)

    async def register(self, cred: Credentials) -> None:
        """Create the user; 409 if the name is taken."""
        # scrypt is deliberately slow: run it off the event loop.
        pw_hash = await asyncio.to_thread(hash_password, cred.password, self._n)
        if not await self._store.create_user(cred.user, pw_hash, self.clock.wall_ms()):
            raise ApiError(409, "user_exists", f"user {cred.user!r} is already registered")

    async def login(self, cred: Credentials, address: str = "") -> dict[str, object]:
        """``{"token", "user", "expires_at"}``; 401 for an unknown user or a wrong password
        (the answer, and the work done, do not say which); 429 when this account or
        *address* failed too often."""
        # An attempt on an account takes its token up front and a success gives it back, so
        # guesses in flight at once (the password check takes tens of milliseconds) count
        # too. An address is charged for failures only: many users behind one address (a
        # NAT, a load generator) may log in at once.
        wait_ip = self._per_ip.wait_s(address)
        if wait_ip > 0:
            raise too_many_logins(wait_ip)
        if not self._per_account.take(cred.user):
            raise too_many_logins(self._per_account.wait_s(cred.user))
        stored = await self._store.password_hash(cred.user)
        ok = await asyncio.to_thread(verify_password, cred.password, stored or self._dummy_hash)
        if not ok or stored is None:
            self._per_ip.take(address)
            raise unauthorized("unknown user or wrong password")
        self._per_account.refund(cred.user)
        token = secrets.token_urlsafe(32)
        expires = self.clock.wall_ms() + self._ttl_ms
        await self._store.save_token(_token_hash(token), cred.user, expires)
        return {"token": token, "user": cred.user, "expires_at": expires}

    async def logout(self, token: str | None) -> None:
        """Revoke *token* (idempotent: an unknown, expired or revoked token is fine too)."""
        if not token:
            raise unauthorized()
        try:
            await self.user_of(token)
        except ApiError:
            return  # unknown, expired or already revoked: nothing to write
        h = _token_hash(token)
        self._cache.pop(h, None)
        await self._store.revoke_token(h)

    async def user_of(self, token: str | None) -> str:
        """The user *token* belongs to; 401 when missing, unknown, revoked or expired."""
        if not token or len(token) > 128 or not token.isascii():  # tokens are URL-safe base64
            raise unauthorized()
        h = _token_hash(token)
        now = self.clock.wall_ms()
        hit = self._cache.get(h)
        if hit is None or now - hit[2] >= self._cache_ms:  # re-checked now and then: revoked elsewhere?
            owner = await self._store.token_owner(h, now)
            if owner is None:
                self._cache.pop(h, None)
                raise unauthorized("invalid or expired token")
            hit = self._cache[h] = (owner[0], owner[1], now)
        if hit[1] <= now:
            self._cache.pop(h, None)
            raise unauthorized("invalid or expired token")
        return hit[0]

    async def prune(self) -> int:
        """Forget expired tokens (database and cache) and full throttle buckets; returns how
        many tokens the database dropped."""
        now = self.clock.wall_ms()
        for h in [h for h, (_, exp, _) in self._cache.items() if exp <= now]:
            self._cache.pop(h, None)
        self._per_account.prune()
        self._per_ip.prune()
        return await self._store.prune_tokens(now)


class Throttle:
    """Token buckets by key (account name, address), created on the first attempt and
    forgotten once full again (:meth:`prune`), so a flood of made-up names costs bounded
    memory between prunes."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, TokenBucket] = {}

    def wait_s(self, key: str) -> float:
        """Seconds until *key* may try again (0: now)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        bucket.refill()
        return bucket.wait_s()

    def take(self, key: str) -> bool:
        """Spend one of *key*'s tokens; False (nothing spent) when it has none."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.clock)
        return bucket.take()

    def refund(self, key: str) -> None:
        """Give back the token an attempt took (it succeeded)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(bucket.burst, bucket.tokens + 1.0)

    def prune(self) -> None:
        for key in [k for k, b in self._buckets.items() if b.refill() >= b.burst]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
