"""Drift monitoring end to end with real parts: the server command, Prometheus, Alertmanager and a webhook.

The service runs with two workers (metrics in multiprocess mode); Debian's Prometheus scrapes it every second and
evaluates the repository's rules (deploy/prometheus/rules.yml) with their windows shortened to seconds; Debian's
Alertmanager routes with the repository's grouping to a webhook this module runs. Iris rows leave every feature's
PSI low and the drift alert silent; the same rows with petal_length 2.5 cm longer raise that feature's PSI alone,
and MPSInputDrift for petal_length reaches the webhook.

The windows are shortened (an hour to 20 s), the row minimums are not: they guard against sampling noise, which
depends on the rows counted, not on how long counting took. With the minimum lowered to 50, the first 50 shuffled
iris rows gave sepal_width a PSI of 0.24 and fired MPSInputDrift on iris traffic.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from ml_production_service.features import FEATURE_NAMES
from tests.functional.prometheus_stack import (
    RULES,
    Prometheus,
    WebhookReceiver,
    code_brackets,
    poll,
    restore_expr,
    running_alertmanager,
    running_prometheus,
    shorten_rules,
    uses_offset,
)
from tests.functional.server_process import running_server

MODEL = "random_forest"
WINDOW = "20s"
SHIFTED = "petal_length"
SHIFT_CM = 2.5
PSI_LOW = 0.1
"""The rules' own "stable" line (< 0.1). The traffic is whole shuffled passes over the 150 iris rows, so any
window of 200 or more of them has a PSI under 0.04 on every feature; i.i.d. draws of 200 rows reach 0.14 at times."""
PASSES = 2
"""Passes over the iris rows per phase: 300 rows, over the drift alert's minimum (200) in a window."""
ROUNDS = 12
"""Rounds per phase, each a few single rows on /predict, then the rest of the round's rows on /predict/batch."""
SINGLES = 5
ROUND_S = 0.5
SILENCE_S = 4.0
"""How long the drift alert must stay silent once the iris rows are in: four rule evaluations and Alertmanager's
group wait, which is what the shifted phase takes to reach the webhook."""
TIMEOUT_S = 20.0


def _drift_rule() -> tuple[float, int]:
    """The drift alert's PSI threshold and row minimum, as rules.yml writes them."""
    (rule,) = (rule for rule in shorten_rules(RULES.read_text(encoding="utf-8")).rules if rule.name == "MPSInputDrift")
    match = re.fullmatch(
        r"mps:input_psi:1h > ([0-9.]+)\s+and on \(model_type\)\s+mps:input_rows:1h >= (\d+)\s*", rule.original["expr"]
    )
    assert match, rule.original["expr"]
    return float(match[1]), int(match[2])


def test_the_test_rules_are_the_repository_rules_with_short_windows() -> None:
    """The rules Prometheus evaluates below are rules.yml with every range window, `for` and group interval
    shortened, and nothing else changed: putting the recorded windows back gives every expression as written, no
    other window, offset or rule key is left that the shortening would have missed, and the traffic below is
    enough to arm the drift alert and quiet enough to stay under it."""
    shortened = shorten_rules(RULES.read_text(encoding="utf-8"), window=WINDOW, interval="1s")
    assert shortened.rules and all(interval is not None for interval in shortened.original_intervals)
    assert all(group["interval"] == "1s" for group in shortened.groups)
    for rule in shortened.rules:
        original, rendered = str(rule.original["expr"]), str(rule.rendered["expr"])
        assert restore_expr(rendered, rule.windows) == original, rule.name
        assert code_brackets(original) == rule.windows, f"{rule.name}: a bracket that is not a plain window"
        assert set(code_brackets(rendered)) <= {f"[{WINDOW}]"}, rule.name
        assert not uses_offset(original), rule.name
        assert {key: value for key, value in rule.rendered.items() if key not in {"expr", "for"}} == {
            key: value for key, value in rule.original.items() if key not in {"expr", "for"}
        }
        if "alert" in rule.original:
            assert rule.rendered["for"] == "0s" and rule.original["for"] != "0s", rule.name
    assert sum(len(rule.windows) for rule in shortened.rules) > 0
    psi_max, min_rows = _drift_rule()
    assert psi_max > PSI_LOW
    assert min_rows < PASSES * 150


def _post(url: str, body: Any) -> Any:
    # A new connection per request: the kernel hands them to both workers, so both count rows.
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        assert response.status == 200
        return json.loads(response.read())


def _send(server_url: str, rows: np.ndarray) -> int:
    """Send ``rows`` over ROUNDS rounds of ROUND_S seconds; return how many went through /predict/batch (those
    are counted into the metrics at once; a single row may wait in its worker until the next flush)."""
    batched = 0
    for chunk in np.array_split(rows, ROUNDS):
        started = time.monotonic()
        records = [dict(zip(FEATURE_NAMES, row.tolist(), strict=True)) for row in chunk]
        for record in records[:SINGLES]:
            assert _post(f"{server_url}/predict", record)["model_type"] == MODEL
        answer = _post(f"{server_url}/predict/batch", {"instances": records[SINGLES:]})
        assert len(answer["predictions"]) == len(records) - SINGLES
        batched += len(records) - SINGLES
        time.sleep(max(0.0, ROUND_S - (time.monotonic() - started)))
    return batched


def _iris_rows(rng: np.random.Generator) -> np.ndarray:
    """PASSES passes over the 150 iris rows, each in its own random order."""
    iris = load_iris().data
    return np.vstack([iris[rng.permutation(len(iris))] for _ in range(PASSES)])


def _psi(prometheus: Prometheus) -> dict[str, float]:
    return prometheus.by("feature", f'mps:input_psi:1h{{model_type="{MODEL}"}}')


def _drift_alerts(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [alert for alert in prometheus.alerts() if alert["labels"]["alertname"] == "MPSInputDrift"]


def _state(prometheus: Prometheus, webhook: WebhookReceiver) -> str:
    """What a failure message shows: PSI, rows, Prometheus' alerts, the webhook's, and the logs' last lines."""
    alerts = [(a["labels"]["alertname"], a["labels"].get("feature"), a["state"]) for a in prometheus.alerts()]
    received = [(a.labels["alertname"], a.labels.get("feature"), a.status) for a in webhook.alerts()]
    return (
        f"PSI {_psi(prometheus)}\nrows {prometheus.by('model_type', 'mps:input_rows:1h')}\n"
        f"Prometheus alerts {alerts}\nwebhook {received}\n"
        f"--- prometheus\n{prometheus.process.log(last=20)}"
    )


def _wait_counted(prometheus: Prometheus, at_least: int, min_rows: int) -> float:
    """Wait until Prometheus has scraped ``at_least`` rows of every feature and the rules have counted at least
    ``min_rows`` (and 90 % of them) in the window; return the recorded row count."""
    total = f'min(sum by (feature) (mps_input_bin_total{{model_type="{MODEL}"}}))'
    poll(lambda: True if sum(v for _, v in prometheus.query(total)) >= at_least else None, TIMEOUT_S, "rows scraped")

    def recorded() -> float | None:
        rows = prometheus.by("model_type", "mps:input_rows:1h").get(MODEL, 0.0)
        return rows if rows >= max(min_rows, 0.9 * at_least) and len(_psi(prometheus)) == len(FEATURE_NAMES) else None

    return poll(recorded, TIMEOUT_S, "rows recorded by the rules")


@pytest.mark.slow  # runs the server command, Debian's Prometheus and Alertmanager
def test_drift_on_one_feature_reaches_alertmanager_and_iris_traffic_does_not(tmp_path: Path) -> None:
    """Through the real scrape, rules, Alertmanager routing and webhook: iris rows keep every feature's PSI under
    0.1 and MPSInputDrift silent (with the row minimum met); petal_length 2.5 cm longer raises its PSI over the
    alert's threshold while the other features stay under 0.1, and the drift alerts Prometheus holds and the
    webhook receives are for petal_length only, delivered after the shift began."""
    psi_max, min_rows = _drift_rule()
    rng = np.random.default_rng(20261128)
    iris_rows = _iris_rows(rng)
    shifted_rows = _iris_rows(rng)
    shifted_rows[:, FEATURE_NAMES.index(SHIFTED)] = np.round(
        shifted_rows[:, FEATURE_NAMES.index(SHIFTED)] + SHIFT_CM, 2
    )
    rules = shorten_rules(RULES.read_text(encoding="utf-8"), window=WINDOW, interval="1s")
    with ExitStack() as stack:
        webhook = stack.enter_context(WebhookReceiver())
        alertmanager = stack.enter_context(running_alertmanager(tmp_path / "alertmanager", webhook.url))
        server = stack.enter_context(running_server(MPS_WORKERS="2", MPS_MODEL_TYPE=MODEL))
        target = server.url.removeprefix("http://")
        prometheus = stack.enter_context(
            running_prometheus(tmp_path / "prometheus", target, alertmanager.address, rules.text())
        )
        # A scrape of the bin counters at 0 before any row: the first window's increase starts from it.
        bins = f'count(mps_input_bin_total{{model_type="{MODEL}"}} == 0)'
        poll(lambda: True if prometheus.query(bins) else None, TIMEOUT_S, "the service scraped")
        assert prometheus.by("job", "up") == {"ml-production-service": 1.0}

        # Iris rows: PSI low everywhere, with enough rows in the window for the alert to be armed; it stays silent.
        rows = _wait_counted(prometheus, _send(server.url, iris_rows), min_rows)
        iris_psi = _psi(prometheus)
        assert rows >= min_rows
        assert set(iris_psi) == set(FEATURE_NAMES)
        assert all(value < PSI_LOW for value in iris_psi.values()), iris_psi
        silent_until = time.monotonic() + SILENCE_S
        while time.monotonic() < silent_until:
            assert not _drift_alerts(prometheus), _state(prometheus, webhook)
            assert not webhook.alerts(alertname="MPSInputDrift"), _state(prometheus, webhook)
            assert prometheus.by("model_type", "mps:input_rows:1h").get(MODEL, 0) >= min_rows, "the alert stays armed"
            time.sleep(0.25)

        # petal_length 2.5 cm longer, every other feature drawn as before.
        shift_started = time.monotonic()
        _send(server.url, shifted_rows)
        poll(
            lambda: webhook.alerts(alertname="MPSInputDrift") or None,
            TIMEOUT_S,
            "MPSInputDrift at the webhook",
            explain=lambda: f"{_state(prometheus, webhook)}\n--- alertmanager\n{alertmanager.process.log(last=20)}",
        )
        shifted_psi = _psi(prometheus)
        firing = _drift_alerts(prometheus)
        delivered = webhook.alerts(alertname="MPSInputDrift")

    assert set(shifted_psi) == set(FEATURE_NAMES)
    assert shifted_psi[SHIFTED] > psi_max, shifted_psi
    assert all(value < PSI_LOW for feature, value in shifted_psi.items() if feature != SHIFTED), shifted_psi
    assert {(alert["labels"]["feature"], alert["state"]) for alert in firing} == {(SHIFTED, "firing")}
    assert {(a.labels["feature"], a.labels["model_type"], a.status) for a in delivered} == {(SHIFTED, MODEL, "firing")}
    assert all(alert.received_at > shift_started for alert in delivered)
    assert delivered[0].annotations["summary"] == f"Input drift on {SHIFTED} ({MODEL})"
    assert not webhook.bad_posts
