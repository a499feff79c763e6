"""The compose A/B router for real: Debian's nginx, rendered from the same template and variables as compose."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from tests.functional.server_process import REPOSITORY, free_port, running_server
from tests.functional.test_deployment import ROUTER_TEMPLATE, compose_config, router_service, system_tool

pytestmark = pytest.mark.slow
REQUESTS = 400
RANDOM_FOREST_PERCENT = 70
SIGMAS = 4  # a correct 70/30 router fails this by chance about once in 16,000 runs


def _ab_check() -> ModuleType:
    """deploy/ab_check.py, the script `make service-validate` runs against the compose router."""
    spec = importlib.util.spec_from_file_location("ab_check", REPOSITORY / "deploy" / "ab_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_router_config(variables: dict[str, str], destination: Path) -> None:
    """Render the template as the nginx image does: envsubst, limited to names matching NGINX_ENVSUBST_FILTER."""
    allowed = re.compile(variables["NGINX_ENVSUBST_FILTER"])
    shell_format = " ".join(f"${{{name}}}" for name in sorted(variables) if allowed.search(name))
    rendered = subprocess.run(
        [system_tool("envsubst"), shell_format],
        input=ROUTER_TEMPLATE.read_text(encoding="utf-8"),
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    destination.write_text(rendered, encoding="utf-8")


@contextmanager
def running_nginx(site_config: Path, port: int, work: Path) -> Iterator[str]:
    """Debian's nginx in the foreground with ``site_config`` inside ``http``, as the nginx image includes conf.d."""
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / folder).mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers write temp files under root-only tmp_path
    main = work / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  access_log {work}/access.log;\n"
        + "".join(f"  {folder}_temp_path {work}/{folder};\n" for folder in ("client_body", "proxy", "fastcgi"))
        + f"  uwsgi_temp_path {work}/uwsgi;\n  scgi_temp_path {work}/scgi;\n  include {site_config};\n}}\n",
        encoding="utf-8",
    )
    nginx = system_tool("nginx")
    test = subprocess.run([nginx, "-t", "-p", str(work), "-c", str(main), "-e", str(work / "error.log")], check=False)
    assert test.returncode == 0, (work / "error.log").read_text(encoding="utf-8")
    process = subprocess.Popen([nginx, "-p", str(work), "-c", str(main), "-e", str(work / "error.log")])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/router/health", timeout=1):  # noqa: S310
                    break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, (work / "error.log").read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_router_splits_traffic_by_weight_and_names_the_variant(tmp_path: Path) -> None:
    """Through the compose router's config, 70% go to random_forest within 4 sigma; the header names who answered."""
    compose_router = router_service(compose_config())["environment"]
    port = free_port()
    with ExitStack() as stack:
        # WARNING: running_server reads the log only at the end; 400 request lines would fill the pipe first.
        quiet = {"MPS_LOG_LEVEL": "WARNING"}
        forest = stack.enter_context(running_server(MPS_MODEL_TYPE="random_forest", **quiet))
        tree = stack.enter_context(running_server(MPS_MODEL_TYPE="decision_tree", **quiet))
        variables = {
            **compose_router,
            "AB_LISTEN": f"127.0.0.1:{port}",
            "AB_RANDOM_FOREST_ADDR": forest.url.removeprefix("http://"),
            "AB_DECISION_TREE_ADDR": tree.url.removeprefix("http://"),
            "AB_RANDOM_FOREST_PERCENT": str(RANDOM_FOREST_PERCENT),
        }
        site = tmp_path / "ab.conf"
        render_router_config(variables, site)
        router = stack.enter_context(running_nginx(site, port, tmp_path))
        counts = _ab_check().count_variants(router, REQUESTS)  # raises if a header and an answer disagree
        traced = urllib.request.Request(
            f"{router}/predict",
            data=json.dumps(
                {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
            ).encode(),
            headers={"Content-Type": "application/json", "X-Request-ID": "ab-trace-1"},
        )
        with urllib.request.urlopen(traced, timeout=10) as response:  # noqa: S310
            echoed = response.headers["X-Request-ID"]
    rendered = site.read_text(encoding="utf-8")
    assert "${" not in rendered and "$request_id" in rendered, "only the AB_ variables were substituted"
    assert set(counts) == {"random_forest", "decision_tree"} and sum(counts.values()) == REQUESTS
    expected = REQUESTS * RANDOM_FOREST_PERCENT / 100
    sigma = math.sqrt(REQUESTS * RANDOM_FOREST_PERCENT / 100 * (1 - RANDOM_FOREST_PERCENT / 100))
    assert abs(counts["random_forest"] - expected) <= SIGMAS * sigma, f"observed {dict(counts)}"
    assert echoed == "ab-trace-1", "the client's request id reaches the service through the router"
