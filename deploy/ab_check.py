"""Send predictions through the A/B router and print which variant answered how often (make service-validate)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

VARIANT_HEADER = "X-Model-Variant"
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class RouterError(RuntimeError):
    """The router answered something other than a prediction from the variant its header names."""


def predict_once(url: str, timeout: float = 10.0) -> str:
    """POST one row to ``url``/predict; return the variant, checked against the answer's ``model_type``."""
    request = urllib.request.Request(  # noqa: S310 - the URL is the user's own router
        f"{url}/predict", data=json.dumps(SETOSA).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the user's own router
        variant = response.headers.get(VARIANT_HEADER)
        answer = json.load(response)
        status = response.status
    if status != 200 or variant is None or answer.get("model_type") != variant:
        raise RouterError(f"status {status}, {VARIANT_HEADER}={variant!r}, model_type={answer.get('model_type')!r}")
    return str(variant)


def count_variants(url: str, requests: int) -> Counter[str]:
    """How many of ``requests`` predictions each variant answered."""
    return Counter(predict_once(url) for _ in range(requests))


def wait_for(url: str, seconds: float) -> None:
    """Poll ``url``/router/health until it answers 200, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/router/health", timeout=2):  # noqa: S310 - 2xx, or it raises
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the A/B router")
    parser.add_argument("--requests", type=int, default=200, help="predictions to send (0: only wait)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the router first")
    args = parser.parse_args()
    try:
        if args.wait:
            wait_for(args.url, args.wait)
        counts = count_variants(args.url, args.requests)
    except (urllib.error.URLError, ConnectionError, RouterError) as error:
        sys.stderr.write(f"router {args.url}: {error}\n")
        return 1
    for variant, count in sorted(counts.items()):
        sys.stdout.write(f"{variant}: {count}/{args.requests} ({100 * count / args.requests:.1f}%)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
