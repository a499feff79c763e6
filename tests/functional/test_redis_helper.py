"""The redis-server test helper itself: it starts a real, empty, non-persistent server, kills it and restarts it."""

from __future__ import annotations

import pytest
import redis

from tests.functional.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.slow  # runs a Debian tool (make system-tools)


def test_running_redis_serves_dies_on_kill_and_comes_back_empty_on_the_same_port() -> None:
    """SET/GET work; after kill() the port refuses; restart() answers on the same URL with nothing persisted."""
    with running_redis() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        with server.client() as client:
            assert client.set("mps:probe", "1") and client.get("mps:probe") == b"1"
            assert client.config_get("save") == {"save": ""} and client.config_get("appendonly")["appendonly"] == "no"
        server.kill()
        assert not server.running()
        with server.client(timeout=0.5) as client, pytest.raises(redis.ConnectionError):
            client.ping()
        url = server.url
        server.restart()
        assert server.running() and server.url == url
        with server.client() as client:
            assert client.ping() and client.get("mps:probe") is None, "a restart forgets every counter"
        stopped: RedisServer = server
    assert not stopped.running(), "the block's end stops the server"
    assert not list(stopped.directory.parent.glob(stopped.directory.name)), "its directory is removed"


def test_running_redis_stops_the_server_when_the_test_fails() -> None:
    """An exception inside the block still stops the server (SIGTERM, then SIGKILL)."""
    started: list[RedisServer] = []
    with pytest.raises(RuntimeError, match="test failed"), running_redis() as server:
        started.append(server)
        raise RuntimeError("test failed")
    (server,) = started
    assert not server.running()
    assert server.process is not None and server.process.returncode is not None
