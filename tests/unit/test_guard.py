"""The guard's parts without HTTP: the keys file, key checks, client addresses, limits and their quota."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ml_production_service.guard import (
    ClientAddresses,
    KeyFileError,
    KeyRing,
    Quota,
    RateLimiter,
    StorageUnavailable,
    load_keys,
    parse_networks,
    parse_rate_limit,
    presented_key,
    storage_uri,
)

KEY = b"mps_secret-one"
OTHER = b"mps_secret-two"


def _line(key_id: str, key: bytes) -> str:
    return f"{key_id}:{hashlib.sha256(key).hexdigest()}"


def _keys_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "keys"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_keys_file_with_comments_and_blank_lines_loads_every_key(tmp_path: Path) -> None:
    """Comments and blank lines are skipped; each key is its id and the sha256 of the key, never the key."""
    path = _keys_file(tmp_path, "# team keys", "", _line("alice", KEY), "  " + _line("bob", OTHER).upper() + "  ")
    keys = load_keys(path)
    assert [k.key_id for k in keys] == ["alice", "BOB"]
    assert keys[0].digest == hashlib.sha256(KEY).digest() and KEY not in path.read_bytes()


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        pytest.param(["alice"], "line 1: expected key_id:sha256", id="no-separator"),
        pytest.param(["# ok", "alice:abc"], "line 2: expected key_id:sha256", id="short-hash"),
        pytest.param([f"al ice:{'0' * 64}"], "line 1", id="space-in-id"),
        pytest.param([_line("a", KEY), _line("a", OTHER)], "line 2: key id 'a' appears twice", id="duplicate"),
        pytest.param(["# nothing"], "holds no key", id="empty"),
    ],
)
def test_a_malformed_keys_file_names_the_file_and_line(tmp_path: Path, lines: list[str], problem: str) -> None:
    """Start-up stops on a bad keys file, and the message says where."""
    path = _keys_file(tmp_path, *lines)
    with pytest.raises(KeyFileError, match=problem) as error:
        load_keys(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_an_unreadable_keys_file_is_one_line(tmp_path: Path) -> None:
    """A missing file (or a folder) is a KeyFileError naming it."""
    with pytest.raises(KeyFileError, match="cannot be read"):
        load_keys(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="cannot be read"):
        load_keys(tmp_path)


def test_the_ring_knows_its_keys_and_nothing_else(tmp_path: Path) -> None:
    """The right key gives its id; another key, a prefix or an empty key gives None."""
    ring = KeyRing(load_keys(_keys_file(tmp_path, _line("alice", KEY), _line("bob", OTHER))))
    assert ring.identify(KEY) == "alice" and ring.identify(OTHER) == "bob"
    for wrong in (b"mps_secret", KEY + b"x", b"", hashlib.sha256(KEY).hexdigest().encode()):
        assert ring.identify(wrong) is None


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        pytest.param([(b"authorization", b"Bearer abc")], b"abc", id="bearer"),
        pytest.param([(b"authorization", b"bearer   abc ")], b"abc", id="bearer-any-case"),
        pytest.param([(b"x-api-key", b" abc ")], b"abc", id="x-api-key"),
        pytest.param([(b"authorization", b"Basic abc")], None, id="basic-is-not-a-key"),
        pytest.param([(b"authorization", b"Bearer ")], None, id="empty-bearer"),
        pytest.param([(b"accept", b"*/*")], None, id="none"),
    ],
)
def test_the_key_comes_from_either_header(headers: list[tuple[bytes, bytes]], key: bytes | None) -> None:
    """``Authorization: Bearer`` or ``X-API-Key``; anything else is no key."""
    assert presented_key(headers) == key


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    """The socket peer, unless it is a trusted proxy: then the right-most hop that is not one."""
    addresses = ClientAddresses(parse_networks("10.0.0.0/8, ::1"))
    forwarded = [(b"x-forwarded-for", b"203.0.113.9, 198.51.100.7, 10.1.2.3")]
    assert addresses.client("192.0.2.1", forwarded) == "192.0.2.1", "an untrusted peer cannot name another client"
    assert addresses.client("10.0.0.2", forwarded) == "198.51.100.7", "the nearest untrusted hop, not the first"
    assert addresses.client("10.0.0.2", [(b"x-forwarded-for", b"10.9.9.9")]) == "10.0.0.2"
    assert addresses.client("10.0.0.2", [(b"x-forwarded-for", b"not-an-ip")]) == "10.0.0.2"
    assert addresses.client("10.0.0.2", []) == "10.0.0.2"
    assert addresses.client("testclient", forwarded) == "testclient"
    assert addresses.client(None, forwarded) == "unknown"
    assert ClientAddresses(()).client("10.0.0.2", forwarded) == "10.0.0.2"


def test_settings_are_parsed_or_refused() -> None:
    """Networks, limits and storages: the configuration's validators use these."""
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")
    assert [item.amount for item in parse_rate_limit("100/second;5000/minute")] == [100, 5000]
    with pytest.raises(ValueError):
        parse_rate_limit("lots")
    assert storage_uri("memory://") == "async+memory://"
    assert storage_uri("redis://r:6379/0") == "async+redis://r:6379/0"
    with pytest.raises(ValueError, match="memory:// or redis://"):
        storage_uri("memcached://m:11211")


def test_quota_headers_add_retry_after_only_when_refused() -> None:
    """The RateLimit-* trio always; Retry-After (at least 1 s) when over the limit."""
    assert Quota(10, 4, 0, True).headers() == {
        "ratelimit-limit": "10",
        "ratelimit-remaining": "4",
        "ratelimit-reset": "0",
    }
    assert Quota(10, 0, 0, False).headers()["retry-after"] == "1"


def test_memory_limiter_charges_rows_and_reports_the_tightest_limit() -> None:
    """A request costs its rows; the quota shown is the limit closest to running out; over it is refused."""
    limiter = RateLimiter(parse_rate_limit("5/minute;100/hour"), storage_uri("memory://"))

    async def scenario() -> list[Quota]:
        return [
            await limiter.hit("c1", 2),
            await limiter.hit("c1", 2),
            await limiter.hit("c1", 2),
            await limiter.hit("c2", 1),
        ]

    first, second, third, other = asyncio.run(scenario())
    assert (first.limit, first.remaining, first.allowed) == (5, 3, True)
    assert (second.remaining, second.allowed) == (1, True)
    assert not third.allowed and 0 < third.reset_s <= 60
    assert (other.remaining, other.allowed) == (4, True), "each client has its own budget"


def test_an_unreachable_redis_is_a_storage_error_quickly() -> None:
    """Nothing listens: the limiter raises StorageUnavailable within its timeout instead of hanging."""
    limiter = RateLimiter(parse_rate_limit("5/minute"), storage_uri("redis://127.0.0.1:1/0"))  # refused at once
    with pytest.raises(StorageUnavailable):
        asyncio.run(limiter.hit("c1", 1))
