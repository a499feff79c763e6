"""One HTTP request on a fresh connection: the readiness polls, the answer checks and the probes (not the load)."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def http_request(
    url: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """GET ``path`` (POST ``body`` as JSON when given) on ``url``; the status and the body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})} if body is not None else {}
        connection.request("POST" if body is not None else "GET", path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
