"""Pure ASGI access control: API keys (401) and the client each request counts against.

Installed only when keys or rate limits are configured, so that with both off it costs nothing. The data plane
charges the client and leaves the ``RateLimit-*`` headers in the request state; this layer adds them to the
answer, whatever its status.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_production_service.guard import ClientAddresses, KeyRing, presented_key
from ml_production_service.server.errors import ApiError, send_error
from ml_production_service.server.metrics import AUTH_REJECTED

OPEN_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"})
"""Probes and the scrape: open unless ``MPS_AUTH_PROTECT_OPS``, so that a platform needs no key to check on us."""
CHALLENGE = {"www-authenticate": 'Bearer realm="ml-production-service"'}


def unauthorized(reason: str) -> ApiError:
    """401: no key, or a key that is not in the keys file."""
    message = {
        "missing": "an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>",
        "invalid": "the API key is not valid",
    }[reason]
    return ApiError(
        401,
        "unauthorized",
        message,
        [{"field": "authorization", "rule": reason, "message": message}],
        headers=CHALLENGE,
    )


class AccessMiddleware:
    """Checks the key where one is needed, names the client, and adds the quota headers to the answer."""

    def __init__(self, app: ASGIApp, keyring: KeyRing | None, addresses: ClientAddresses, protect_ops: bool) -> None:
        self.app = app
        self.keyring = keyring
        self.addresses = addresses
        self.protect_ops = protect_ops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        headers = scope["headers"]
        key_id = None
        if self.keyring is not None and (self.protect_ops or scope["path"] not in OPEN_PATHS):
            presented = presented_key(headers)
            key_id = self.keyring.identify(presented) if presented is not None else None
            if key_id is None:
                reason = "missing" if presented is None else "invalid"
                AUTH_REJECTED.labels(reason).inc()
                await send_error(send, unauthorized(reason), state.get("request_id"))
                return
            state["key_id"] = key_id
        peer = scope.get("client")
        # Keyed clients are counted by key (one budget wherever they come from), the others by address.
        state["client"] = (
            f"key:{key_id}" if key_id is not None else self.addresses.client(peer[0] if peer else None, headers)
        )

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start" and "ratelimit" in state:
                message["headers"] = [*message.get("headers", []), *state["ratelimit"]]
            await send(message)

        await self.app(scope, receive, send_with_quota)
