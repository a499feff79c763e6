"""Run Debian's real Prometheus and Alertmanager, and a webhook that records what Alertmanager sends (test helper).

Everything listens on 127.0.0.1 and a free port, keeps its data in a temporary directory and is stopped (SIGTERM,
then SIGKILL) when its block ends. Prometheus evaluates the repository's rules (deploy/prometheus/rules.yml) with
their time windows shortened by ``shorten_rules``, so that a test sees in seconds what production sees in an hour;
its scrape job and Alertmanager's routing are the repository's files with their targets and timings replaced.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.functional.deploy_helpers import system_tool
from tests.functional.server_process import REPOSITORY, free_port, terminate

PROMETHEUS_DIR = REPOSITORY / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = PROMETHEUS_DIR / "alertmanager.yml"

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 2.0

T = TypeVar("T")

# --- the rules, shortened ------------------------------------------------------------------------------------

_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_WINDOW = re.compile(rf"\[{_DURATION}\]")
_BRACKETS = re.compile(r"\[[^\]]*\]")
RULE_KEYS = frozenset({"record", "alert", "expr", "for", "labels", "annotations"})
"""The keys a rule may have; any other (``keep_firing_for``, say) could hold a duration the shortening misses."""


def _split(expr: str) -> list[str]:
    """``expr`` cut into alternating PromQL code (even indexes) and string literals (odd indexes)."""
    parts: list[str] = []
    position = 0
    for match in _STRING.finditer(expr):
        parts += [expr[position : match.start()], match[0]]
        position = match.end()
    return [*parts, expr[position:]]


def shorten_expr(expr: str, window: str) -> tuple[str, list[str]]:
    """``expr`` with every range window (``[1h]``) set to ``[window]``, and the old windows in text order; string
    literals (label matchers) are left alone."""
    replaced: list[str] = []

    def replace(match: re.Match[str]) -> str:
        replaced.append(match[0])
        return f"[{window}]"

    parts = _split(expr)
    return "".join(_WINDOW.sub(replace, part) if i % 2 == 0 else part for i, part in enumerate(parts)), replaced


def restore_expr(shortened: str, replaced: list[str]) -> str:
    """Undo ``shorten_expr``: each window, in order, back to the one it replaced (the proof that nothing else
    changed)."""
    pending = iter(replaced)

    def restore(match: re.Match[str]) -> str:
        old = next(pending, None)
        assert old is not None, f"more windows than recorded: {match[0]}"
        return old

    parts = _split(shortened)
    restored = "".join(_WINDOW.sub(restore, part) if i % 2 == 0 else part for i, part in enumerate(parts))
    assert next(pending, None) is None, "more windows recorded than found"
    return restored


def code_brackets(expr: str) -> list[str]:
    """Every ``[...]`` of an expression outside its string literals: range windows, subqueries."""
    return [found for i, part in enumerate(_split(expr)) if i % 2 == 0 for found in _BRACKETS.findall(part)]


def uses_offset(expr: str) -> bool:
    """Whether an expression shifts a selector in time (``offset``, ``@``), which shortening would not touch."""
    return any(re.search(r"\boffset\b|@", part) for i, part in enumerate(_split(expr)) if i % 2 == 0)


@dataclass
class ShortenedRule:
    """One rule of rules.yml and its shortened form."""

    name: str
    original: dict[str, Any]
    rendered: dict[str, Any]
    windows: list[str]
    """The windows of the original expression, in text order, each replaced by the shortened one."""


@dataclass
class ShortenedRules:
    """rules.yml with its windows, ``for`` durations and group intervals shortened."""

    window: str
    interval: str
    groups: list[dict[str, Any]]
    rules: list[ShortenedRule]
    original_intervals: list[str | None] = field(default_factory=list)

    def text(self) -> str:
        """The rendered rule file (multi-line expressions as literal blocks, as in the repository's file)."""
        return str(yaml.dump({"groups": self.groups}, Dumper=_BlockDumper, sort_keys=False, width=1000))


# A safe dumper writing multi-line strings as ``|`` blocks (built with type(): PyYAML has no type stubs here).
_BlockDumper: Any = type("_BlockDumper", (yaml.SafeDumper,), {})


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _represent_str)


def shorten_rules(text: str, window: str = "20s", interval: str = "1s") -> ShortenedRules:
    """The rule file ``text`` for a test: every range window ``window``, every ``for`` 0s, every group evaluated
    every ``interval``; everything else as written.

    The minimum row counts (``>= 200``) are kept: they guard against sampling noise, which depends on the rows in
    the window, not on its length (the first 50 of the shuffled iris rows the end-to-end test sends give
    sepal_width a PSI of 0.24, over the drift alert's 0.2).
    """
    document = yaml.safe_load(text)
    groups: list[dict[str, Any]] = []
    rules: list[ShortenedRule] = []
    intervals: list[str | None] = []
    for group in document["groups"]:
        intervals.append(group.get("interval"))
        rendered_rules = []
        for rule in group["rules"]:
            unknown = set(rule) - RULE_KEYS
            assert not unknown, (
                f"{rule.get('alert') or rule.get('record')}: keys the shortening does not know {unknown}"
            )
            expr, windows = shorten_expr(str(rule["expr"]), window)
            rendered = {**rule, "expr": expr}
            if "for" in rule:
                rendered["for"] = "0s"
            rendered_rules.append(rendered)
            rules.append(ShortenedRule(str(rule.get("alert") or rule.get("record")), rule, rendered, windows))
        groups.append({**group, "interval": interval, "rules": rendered_rules})
    return ShortenedRules(window, interval, groups, rules, intervals)


# --- processes -----------------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    """Status and body of a GET; a refused or reset connection is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def poll(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something other than None; when time runs out, fail naming ``what`` and
    adding what ``explain`` says about the state of things."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s" + (f"\n{explain()}" if explain else ""))
        time.sleep(interval)


class ManagedProcess:
    """A system tool run in the background, its output in a log file, stopped by SIGTERM then SIGKILL."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (its stdout and stderr to the log file)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def log(self, last: int | None = None) -> str:
        """Everything the process has written (its ``last`` lines only, if given)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return text if last is None else "\n".join(text.splitlines()[-last:])

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT_S) -> None:
        """Poll ``url`` until it answers 200; fail with the log if the process exits or time runs out."""

        def ready() -> bool | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            return True if http_get(url, timeout=0.5)[0] == 200 else None

        try:
            poll(ready, timeout, f"{self.name} ready at {url}", interval=0.1)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.log()}") from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
        if self.process is not None:
            terminate(self.process, STOP_TIMEOUT_S)


@contextmanager
def managed(process: ManagedProcess, ready_path: str, port: int) -> Iterator[ManagedProcess]:
    """Start ``process``, wait until ``ready_path`` answers 200 on ``port``, and always stop it at the end."""
    try:
        process.start()
        process.wait_ready(f"http://127.0.0.1:{port}{ready_path}")
        yield process
    finally:
        process.stop()


# --- the webhook receiver ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedAlert:
    """One alert of one notification Alertmanager posted: when it arrived (monotonic), its status and labels."""

    received_at: float
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (in a thread) recording every alert Alertmanager's webhook posts to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alerts: list[ReceivedAlert] = []
        self.bad_posts: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver._record(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, name="alert-webhook", daemon=True)

    def _record(self, body: bytes) -> None:
        now = time.monotonic()
        try:
            notification = json.loads(body)
            alerts = [
                ReceivedAlert(now, str(alert["status"]), dict(alert["labels"]), dict(alert.get("annotations", {})))
                for alert in notification["alerts"]
            ]
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.bad_posts.append(body)
            return
        with self._lock:
            self._alerts += alerts

    def alerts(self, **labels: str) -> list[ReceivedAlert]:
        """The alerts received so far whose labels include ``labels``."""
        with self._lock:
            return [a for a in self._alerts if labels.items() <= a.labels.items()]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=STOP_TIMEOUT_S)


# --- Alertmanager and Prometheus -----------------------------------------------------------------------------


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """deploy/prometheus/alertmanager.yml's routing (its grouping and sub-routes) with 1 s group timings, a 1 h
    repeat, and every receiver a webhook to ``webhook_url``."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))

    timings = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}

    def quicken(route: dict[str, Any]) -> dict[str, Any]:
        # Sub-routes lose their own timings and inherit the root's.
        quick = {key: value for key, value in route.items() if key not in timings and key != "routes"}
        if "routes" in route:
            quick["routes"] = [quicken(child) for child in route["routes"]]
        return quick

    names = [receiver["name"] for receiver in config["receivers"]]
    return {
        "route": {**quicken(config["route"]), **timings},
        "receivers": [
            {"name": name, "webhook_configs": [{"url": webhook_url, "send_resolved": True}]} for name in names
        ],
    }


def prometheus_config(target: str, alertmanager: str, rule_file: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml's scrape job (its name, which the rules watch) scraping ``target`` every
    second, rules from ``rule_file`` evaluated every second, alerts to ``alertmanager``."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    job = {**job, "static_configs": [{"targets": [target]}], "scrape_interval": "1s", "scrape_timeout": "1s"}
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [rule_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [job],
    }


@dataclass
class Alertmanager:
    """A running Alertmanager."""

    process: ManagedProcess
    address: str

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://{self.address}"


@contextmanager
def running_alertmanager(directory: Path, webhook_url: str) -> Iterator[Alertmanager]:
    """Alertmanager without clustering, its storage in ``directory``, sending every alert to ``webhook_url``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(webhook_url), sort_keys=False), encoding="utf-8")
    port = free_port()
    command = [
        system_tool("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # empty: no gossip port, no peers
        "--log.level=info",
    ]
    process = ManagedProcess("alertmanager", command, directory / "alertmanager.log")
    with managed(process, "/-/ready", port):
        yield Alertmanager(process, f"127.0.0.1:{port}")


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    process: ManagedProcess
    address: str

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://{self.address}"

    def api(self, path: str, **parameters: str) -> Any:
        """The ``data`` of a successful API answer; fail with the answer otherwise."""
        query = f"?{urllib.parse.urlencode(parameters)}" if parameters else ""
        status, body = http_get(f"{self.url}{path}{query}", timeout=5.0)
        assert status == 200, f"{path} {parameters} answered {status}: {body[:500]!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: each sample's labels and value."""
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return [(dict(sample["metric"]), float(sample["value"][1])) for sample in data["result"]]

    def by(self, label: str, expr: str) -> dict[str, float]:
        """An instant query's values keyed by one label."""
        return {labels[label]: value for labels, value in self.query(expr)}

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts its rules hold now (pending or firing)."""
        return list(self.api("/api/v1/alerts")["alerts"])


@contextmanager
def running_prometheus(directory: Path, target: str, alertmanager: str, rules_text: str) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` with the rules ``rules_text``, alerting ``alertmanager``, its TSDB in
    ``directory``; the rule file is checked with promtool first, so a rule 2.42 rejects fails with promtool's
    words."""
    directory.mkdir(parents=True, exist_ok=True)
    rule_file = directory / "rules.yml"
    rule_file.write_text(rules_text, encoding="utf-8")
    check = subprocess.run(
        [system_tool("promtool"), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, f"promtool rejects the shortened rules:\n{check.stdout}{check.stderr}"
    config = directory / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(prometheus_config(target, alertmanager, str(rule_file)), sort_keys=False), encoding="utf-8"
    )
    port = free_port()
    command = [
        system_tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    process = ManagedProcess("prometheus", command, directory / "prometheus.log")
    with managed(process, "/-/ready", port):
        yield Prometheus(process, f"127.0.0.1:{port}")
