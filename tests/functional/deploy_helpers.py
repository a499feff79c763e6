"""Helpers the deployment tests share: the Dockerfile, compose and Kubernetes files as data, and the nginx router.

test_deployment.py checks the files; test_deploy_ab_router.py, test_deploy_image_steps.py and
test_deploy_sigterm.py run what they describe. A helper lives here, not in a test module, once two modules use it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml_production_service.configs import ServiceConfig
from tests.functional.server_process import REPOSITORY

DOCKERFILE = REPOSITORY / "Dockerfile"
COMPOSE_FILE = REPOSITORY / "docker-compose.yml"
LIMITS_COMPOSE_FILE = REPOSITORY / "docker-compose.limits.yml"
K8S = REPOSITORY / "k8s"
ROUTER_TEMPLATE = REPOSITORY / "deploy" / "nginx" / "ab.conf.template"
VENV_BIN = Path(sys.executable).parent
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]


def system_tool(name: str) -> str:
    """The path of a Debian tool the deployment tests run; fail (not skip) when `make system-tools` was not run."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-tools` (as root) first")
    return path


def venv_tool(name: str) -> str:
    """A command-line tool installed in the project environment (the deploy dependency group)."""
    path = VENV_BIN / name
    assert path.exists(), f"{name} is missing from {VENV_BIN}: run `make environment-sync`"
    return str(path)


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each starting with its FROM."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def image_command() -> list[str]:
    """The image's CMD (exec form)."""
    commands = [json.loads(arguments) for keyword, arguments in dockerfile_instructions() if keyword == "CMD"]
    assert len(commands) == 1, "one CMD, in exec form"
    return list(commands[0])


def image_healthcheck() -> list[str]:
    """The image's HEALTHCHECK command (exec form), without its options."""
    checks = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition(" CMD ")
    assert "--interval" in options and "--timeout" in options
    return list(json.loads(command))


def image_env() -> dict[str, str]:
    """The ENV values the runtime stage sets (``KEY=value`` form)."""
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_stages()[-1]:
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in arguments.split())
    return env


def compose_env() -> dict[str, str]:
    """This environment without the variables the compose files read (or docker-compose itself), so the files'
    own defaults are what a test sees."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("SERVICE_IMAGE", "AB_RANDOM_FOREST_PERCENT") and not k.startswith(("MPS_", "COMPOSE_"))
    }


def compose_command(files: tuple[Path, ...] = (COMPOSE_FILE,), profiles: tuple[str, ...] = ()) -> list[str]:
    """docker-compose with ``files`` (in order: later ones override) and ``profiles`` active."""
    command = [system_tool("docker-compose")]
    for path in files:
        command += ["--file", str(path)]
    for profile in profiles:
        command += ["--profile", profile]
    return command


def compose_config(files: tuple[Path, ...] = (COMPOSE_FILE,), profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The compose files as Debian's docker-compose resolves them (defaults filled in, anchors and files merged)."""
    return dict(yaml.safe_load(run_compose(files, profiles, "config")))


def run_compose(files: tuple[Path, ...], profiles: tuple[str, ...], *args: str) -> str:
    """Run Debian's docker-compose on ``files`` with ``profiles``; its output (a failure fails the test)."""
    result = subprocess.run(
        [*compose_command(files, profiles), *args],
        cwd=REPOSITORY,
        env=compose_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def variant_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services that run the model service, by the model type they serve."""
    return {
        service["environment"]["MPS_MODEL_TYPE"]: service
        for service in config["services"].values()
        if "MPS_MODEL_TYPE" in service.get("environment", {})
    }


def router_service(config: dict[str, Any]) -> dict[str, Any]:
    """The compose service that runs the A/B router (it mounts the router template)."""
    routers = [s for s in config["services"].values() if any("ab.conf.template" in v for v in s.get("volumes", []))]
    assert len(routers) == 1
    return routers[0]


def k8s_manifest_files() -> list[Path]:
    """The manifests `make k8s-validate` gives kubernetes-validate (k8s/*.yaml but the kustomization)."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents(paths: list[Path] | None = None) -> list[dict[str, Any]]:
    """Every resource in ``paths`` (default: the plain manifests)."""
    return [d for p in paths or k8s_manifest_files() for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]


def k8s_resource(kind: str, name: str) -> dict[str, Any]:
    """The one resource of ``kind`` named ``name`` in k8s/."""
    found = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def assert_valid_settings(env: dict[str, str]) -> ServiceConfig:
    """``env``'s MPS_* variables are real settings with values the service starts with."""
    settings = {k[len("MPS_") :].lower(): v for k, v in env.items() if k.startswith("MPS_")}
    unknown = set(settings) - set(ServiceConfig.model_fields)
    assert not unknown, f"not service settings: {unknown}"
    return ServiceConfig(**settings)


# --- the nginx A/B router -----------------------------------------------------------------------------------


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def _nginx_tokens(text: str) -> Iterator[str]:
    """nginx configuration tokens: words (``${AB_X}`` included) and quoted strings (unquoted), ``{``, ``}``, ``;``."""
    for match in re.finditer(
        r"#[^\n]*|\s+|([{};])|'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"|((?:\$\{\w+\}|[^\s{};'\"])+)", text
    ):
        punctuation, single, double, word = match.groups()
        quoted = single if single is not None else double
        if quoted is not None:  # nginx's escapes: \n, \r, \t, and a backslash before any other character
            yield re.sub(r"\\(.)", lambda escape: _ESCAPES.get(escape[1], escape[1]), quoted)
        elif punctuation or word:
            yield punctuation or word


def router_directives(text: str | None = None) -> list[tuple[tuple[str, ...], str, list[str]]]:
    """Every directive of the router template: (the enclosing blocks, its name, its arguments).

    ``(("server",), "client_max_body_size", ["1m"])``; a block's own line is in its children's path as
    ``"location /"`` or ``"upstream mps_random_forest"``.
    """
    text = ROUTER_TEMPLATE.read_text(encoding="utf-8") if text is None else text
    found: list[tuple[tuple[str, ...], str, list[str]]] = []
    blocks: list[str] = []
    statement: list[str] = []
    for token in _nginx_tokens(text):
        if token == ";":
            found.append((tuple(blocks), statement[0], statement[1:]))
            statement = []
        elif token == "{":
            blocks.append(" ".join(statement))
            statement = []
        elif token == "}":
            blocks.pop()
        else:
            statement.append(token)
    assert not blocks and not statement, "the template's braces and semicolons balance"
    return found


def server_directives(text: str | None = None) -> dict[str, list[str]]:
    """The directives set at the router's ``server`` level (each once), with their arguments."""
    found: dict[str, list[str]] = {}
    for blocks, name, arguments in router_directives(text):
        if blocks == ("server",) and name not in ("error_page",):
            assert name not in found, f"{name} is set twice at the server level"
            found[name] = arguments
    return found


def render_router_config(variables: dict[str, str], destination: Path, overrides: dict[str, str] | None = None) -> str:
    """Render the template as the nginx image does: envsubst, limited to names matching NGINX_ENVSUBST_FILTER.

    ``overrides`` replaces the arguments of server-level directives (``{"client_header_timeout": "1s"}``) so a
    test need not wait the production timeouts; each must match exactly one directive of the template.
    """
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
    head, server_block, server = rendered.partition("\nserver {\n")
    assert server_block, "the template has a server block"
    for directive, arguments in (overrides or {}).items():
        # Server-level directives are indented four spaces; nested locations' are indented more.
        pattern = re.compile(rf"^    {re.escape(directive)}\s[^;]+;", re.MULTILINE)
        server, count = pattern.subn(f"    {directive} {arguments};".replace("\\", "\\\\"), server)
        assert count == 1, f"{directive} is set {count} times at the server level of the template, not once"
    rendered = head + server_block + server
    destination.write_text(rendered, encoding="utf-8")
    return rendered


@contextmanager
def running_nginx(site_config: Path, port: int, work: Path) -> Iterator[str]:
    """Debian's nginx in the foreground with ``site_config`` inside ``http``, as the nginx image includes conf.d."""
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / folder).mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers write temp files under root-only tmp_path
    main = work / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/error.log info;\n"
        "events { worker_connections 1024; }\n"  # the nginx image's default
        f"http {{\n  access_log {work}/access.log;\n"
        + "".join(f"  {folder}_temp_path {work}/{folder};\n" for folder in ("client_body", "proxy", "fastcgi"))
        + f"  uwsgi_temp_path {work}/uwsgi;\n  scgi_temp_path {work}/scgi;\n  include {site_config};\n}}\n",
        encoding="utf-8",
    )
    nginx = system_tool("nginx")
    test = subprocess.run(
        [nginx, "-t", "-q", "-p", str(work), "-c", str(main), "-e", str(work / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert test.returncode == 0, test.stderr + (work / "error.log").read_text(encoding="utf-8")
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
