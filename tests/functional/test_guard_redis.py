"""Rate limits in a real Redis: two server processes share one budget; a Redis outage follows the policy."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from contextlib import ExitStack

import pytest

from tests.functional.conftest import SETOSA
from tests.functional.redis_server import running_redis
from tests.functional.server_process import RunningServer, running_server

pytestmark = pytest.mark.slow


def _predict(server: RunningServer) -> tuple[int, dict[str, str], dict[str, object]]:
    request = urllib.request.Request(
        f"{server.url}/predict", data=json.dumps(SETOSA).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read())


def _metric(server: RunningServer, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_two_servers_sharing_one_redis_enforce_one_combined_limit() -> None:
    """10/minute across two processes: the 11th request, whichever server gets it, is 429, and the count is one."""
    with running_redis() as redis, ExitStack() as stack:
        settings = {"MPS_RATE_LIMIT": "10/minute", "MPS_RATE_LIMIT_STORAGE": redis.url}
        servers = [stack.enter_context(running_server(**settings)) for _ in range(2)]
        answers = [_predict(servers[i % 2]) for i in range(14)]
        statuses = [status for status, _, _ in answers]
        assert statuses == [200] * 10 + [429] * 4, statuses
        assert [headers["ratelimit-remaining"] for _, headers, _ in answers[:10]] == [str(9 - i) for i in range(10)]
        assert all(int(headers["retry-after"]) >= 1 for _, headers, _ in answers[10:])
        assert answers[-1][2]["code"] == "rate_limited"
        # Both processes counted in Redis, not in themselves: the keys are there.
        assert any(key.startswith(b"LIMITS") for key in redis.client().keys("*"))


@pytest.mark.parametrize(
    ("fail_open", "status"), [pytest.param("true", 200, id="open"), pytest.param("false", 503, id="closed")]
)
def test_a_redis_outage_follows_the_policy_and_is_counted(fail_open: str, status: int) -> None:
    """Redis killed mid-run: fail-open serves (uncounted), fail-closed answers 503; logged and counted; Redis back,
    limits apply again."""
    with running_redis() as redis:
        settings = {
            "MPS_RATE_LIMIT": "100/minute",
            "MPS_RATE_LIMIT_STORAGE": redis.url,
            "MPS_RATE_LIMIT_FAIL_OPEN": fail_open,
        }
        with running_server(**settings) as server:
            assert _predict(server)[0] == 200
            redis.kill()
            during = [_predict(server) for _ in range(3)]
            assert [answer[0] for answer in during] == [status] * 3
            if status == 503:
                assert during[0][2]["code"] == "rate_limit_unavailable" and during[0][1]["retry-after"] == "1"
            else:
                assert "ratelimit-limit" not in during[0][1], "an uncounted answer claims no quota"
            policy = "open" if fail_open == "true" else "closed"
            assert _metric(server, f'mps_rate_limit_storage_errors_total{{policy="{policy}"}}') == 3
            assert _metric(server, "mps_http_requests_total") > 0, "the service kept answering"
            redis.restart()
            status_after, headers, _ = _predict(server)
            assert status_after == 200 and headers["ratelimit-limit"] == "100"
            server.log.seek(0)
            lines = [json.loads(line) for line in server.log.read().splitlines() if line.startswith("{")]
            outages = [line for line in lines if line.get("event") == "rate_limit_storage_error"]
            assert len(outages) == 1, "one line per 10 s, not one per request"
