"""The guard's parts that need no HTTP: API keys, the client a request is counted against, per-client limits.

Keys live in a file of ``key_id:sha256-hex-of-key`` lines; a presented key is hashed and compared, in constant
time, with every stored hash (the plain key is never stored or logged). Rate limits use the ``limits`` library
(its syntax, strategies and storages: ``memory://`` per worker, ``redis://`` shared by every worker and replica).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string

KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
KEY_HASH = re.compile(r"[0-9a-f]{64}")
ANONYMOUS = "anonymous"
"""The key id label of requests made without keys (auth off): client addresses never become metric labels."""
STORAGE_SCHEMES = {"memory": "async+memory://", "redis": "async+redis://", "rediss": "async+rediss://"}
STORAGE_TIMEOUT_S = 0.25
"""How long one limiter call may wait on Redis before it counts as an outage (then the fail-open policy)."""


class KeyFileError(ValueError):
    """The API keys file cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One stored key: its public id and the sha256 of the key."""

    key_id: str
    digest: bytes


def key_digest(key: bytes) -> bytes:
    """The sha256 of a key, as stored (hex) in the keys file."""
    return hashlib.sha256(key).digest()


def load_keys(path: Path) -> tuple[ApiKey, ...]:
    """Every key of ``path``; blank lines and ``#`` comments allowed; any other bad line is a KeyFileError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError(f"API keys file {path} cannot be read: {error}") from None
    keys: list[ApiKey] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, separator, digest = line.partition(":")
        key_id, digest = key_id.strip(), digest.strip().lower()
        if not separator or not KEY_ID.fullmatch(key_id) or not KEY_HASH.fullmatch(digest):
            raise KeyFileError(
                f"API keys file {path} line {number}: expected key_id:sha256-hex-of-key "
                "(id of letters, digits, '.', '_', '-'; 64 hex digits)"
            )
        if key_id in seen:
            raise KeyFileError(f"API keys file {path} line {number}: key id {key_id!r} appears twice")
        seen.add(key_id)
        keys.append(ApiKey(key_id, bytes.fromhex(digest)))
    if not keys:
        raise KeyFileError(f"API keys file {path} holds no key: add key_id:sha256-hex lines")
    return tuple(keys)


class KeyRing:
    """The stored keys; ``identify`` says whose a presented key is."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self.keys = tuple(keys)
        self.ids = frozenset(key.key_id for key in keys)

    def identify(self, presented: bytes) -> str | None:
        """The id of the key ``presented`` hashes to, or None; every stored hash is compared, in constant time."""
        digest = key_digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key.key_id
        return found


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (the first found)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key" and value.strip():
            return value.strip()
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR blocks (``10.0.0.0/8, ::1``); a ValueError names the bad one."""
    networks = []
    for part in text.split(","):
        if part.strip():
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
    return tuple(networks)


class ClientAddresses:
    """The client address a request is counted against: the socket peer, or ``X-Forwarded-For`` only when the
    peer is a trusted proxy (then the right-most address that is not itself a trusted proxy)."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self.trusted = tuple(trusted)

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The address to count: ``peer`` unless it is trusted and the request says whom it forwards."""
        if peer is None:
            return "unknown"
        if not self.trusted or not self.is_trusted(peer):
            return peer
        forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
        hops = [hop.strip() for value in forwarded for hop in value.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if not hop:
                continue
            try:
                address = str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a forged or broken hop: count the proxy itself
            if not self.is_trusted(address):
                return address
        return peer


def parse_rate_limit(text: str) -> tuple[RateLimitItem, ...]:
    """``100/second;5000/minute`` (the ``limits`` syntax) as limit items; a ValueError says what is wrong."""
    items = tuple(parse_many(text))
    if not items:
        raise ValueError(f"no rate limit in {text!r}")
    return items


def storage_uri(text: str) -> str:
    """``memory://`` or ``redis://host:port/db`` as the ``limits`` async storage URI; ValueError otherwise."""
    scheme, separator, rest = text.partition("://")
    if not separator or scheme not in STORAGE_SCHEMES:
        raise ValueError(f"storage must be memory:// or redis://host:port, got {text!r}")
    return STORAGE_SCHEMES[scheme] + rest


@dataclass(frozen=True, slots=True)
class Quota:
    """Where a client stands against its tightest limit after a request: the RateLimit-* header values."""

    limit: int
    remaining: int
    reset_s: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (and ``Retry-After`` when refused)."""
        headers = {
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": str(self.remaining),
            "ratelimit-reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["retry-after"] = str(max(self.reset_s, 1))
        return headers


class StorageUnavailable(RuntimeError):
    """The limiter's storage (Redis) did not answer."""


class RateLimiter:
    """Per-client limits, a request costing its row count, in a memory or Redis storage."""

    def __init__(self, items: Sequence[RateLimitItem], uri: str) -> None:
        self.items = tuple(items)
        options: dict[str, Any] = {}
        # What a storage that cannot answer raises. redis is imported only for a Redis storage: it costs about
        # 10 MB resident, which every worker (and the master, through the configuration) paid for memory://.
        self.unavailable: tuple[type[Exception], ...] = (OSError, TimeoutError)
        if uri.startswith("async+redis"):
            from redis.exceptions import RedisError

            self.unavailable = (RedisError, OSError, TimeoutError)
            options = {
                "implementation": "redispy",
                "socket_timeout": STORAGE_TIMEOUT_S,
                "socket_connect_timeout": STORAGE_TIMEOUT_S,
            }
        self.storage: Any = storage_from_string(uri, **options)  # an async storage for the async+ schemes

    async def hit(self, client: str, cost: int) -> Quota:
        """Charge ``cost`` to ``client`` on every limit; the quota of the tightest one (refused if any is over).

        This is ``FixedWindowRateLimiter.hit`` (one ``incr`` of the limit's key in the storage) with the window's
        remaining count taken from the ``incr`` it already returns, and the reset time read once, for the limit
        shown: ``get_window_stats`` per limit would cost two more storage calls (two Redis round trips).
        """
        try:
            chosen: tuple[RateLimitItem, str, int, bool] | None = None
            for item in self.items:
                key = item.key_for(client)
                count = await self.storage.incr(key, item.get_expiry(), amount=cost)
                remaining, allowed = max(item.amount - count, 0), count <= item.amount
                if chosen is None or not allowed or remaining < chosen[2]:
                    chosen = (item, key, remaining, allowed)
                if not allowed:
                    break
            assert chosen is not None  # items is never empty (parse_rate_limit)
            item, key, remaining, allowed = chosen
            reset_s = math.ceil(max(await self.storage.get_expiry(key) - time.time(), 0))
        except self.unavailable as error:
            raise StorageUnavailable(f"{type(error).__name__}: {error}") from None
        return Quota(item.amount, remaining, reset_s, allowed)
