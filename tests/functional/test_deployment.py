"""Deployment files: the image, the compose A/B stack, the Kubernetes manifests and the README that explains them.

No Docker engine runs here, so the image is proven by hadolint, by parsing the Dockerfile, and by running its
command and health check outside it; compose by Debian's ``docker-compose config``; manifests by
``kubernetes-validate`` (and, for the KServe InferenceService, by ``deploy/validate_kserve.py``). The helpers
that read these files live in deploy_helpers.py, shared with the test_deploy_*.py modules.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml_production_service import __version__
from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.guard import ClientAddresses, KeyRing, load_keys, parse_networks, parse_rate_limit
from ml_production_service.server.errors import ApiError, BodyTooLarge, error_body
from ml_production_service.server.middleware import request_id_from
from tests.functional.deploy_helpers import (
    COMPOSE_FILE,
    DOCKERFILE,
    K8S,
    KUBERNETES_VERSIONS,
    LIMITS_COMPOSE_FILE,
    ROUTER_TEMPLATE,
    assert_valid_settings,
    compose_config,
    dockerfile_instructions,
    dockerfile_stages,
    image_command,
    image_env,
    image_healthcheck,
    k8s_documents,
    k8s_manifest_files,
    k8s_resource,
    router_directives,
    router_service,
    run_compose,
    server_directives,
    system_tool,
    variant_services,
    venv_tool,
)
from tests.functional.server_process import REPOSITORY, SERVER_COMMAND, free_port, running_server

# --- the image ----------------------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint reports no error, warning, info or style finding on the Dockerfile, inline ignores disabled."""
    result = subprocess.run(
        [venv_tool("hadolint"), "--format", "json", "--failure-threshold", "style", "--disable-ignore-pragma", "-"],
        input=DOCKERFILE.read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_hadolint_does_flag_an_unpinned_base(tmp_path: Path) -> None:
    """The lint is live: the original's kind of mistake (an unpinned base image) is reported."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM python:latest\nCMD ["python"]\n', encoding="utf-8")
    result = subprocess.run(
        [venv_tool("hadolint"), "--format", "json", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in {finding["code"] for finding in json.loads(result.stdout)}


def test_image_command_is_the_server_command_and_make_serve_runs_it() -> None:
    """The container runs `python -m ml_production_service`, the command the tests start and `make serve` runs."""
    command = image_command()
    assert command == ["python", "-m", "ml_production_service"]
    assert command[1:] == SERVER_COMMAND[1:]
    assert image_env()["PATH"].startswith("/app/.venv/bin:"), "`python` is the virtualenv's interpreter"
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    )
    last = dry_run.stdout.strip().splitlines()[-1].split()
    assert last[-3:] == command and last[-4] == "--locked"


def test_image_is_multi_stage_pinned_and_installs_locked_runtime_dependencies_before_the_source() -> None:
    """Pinned base and uv; deps from uv.lock without dev groups in a layer before the code; no uv at runtime."""
    stages = dockerfile_stages()
    bases = [arguments.split()[0] for stage in stages for keyword, arguments in stage if keyword == "FROM"]
    assert len(stages) >= 3
    for base in bases:
        assert re.search(r":\d+\.\d+\.\d+", base), f"{base} is not pinned to an exact version"
    assert any(base.startswith("ghcr.io/astral-sh/uv:") for base in bases)
    runtime_base = bases[-1]
    assert runtime_base.startswith("python:3.11.") and "slim" in runtime_base
    builder = [f"{keyword} {arguments}" for keyword, arguments in stages[-2]]
    lock_copy = next(i for i, line in enumerate(builder) if line.startswith("COPY pyproject.toml uv.lock"))
    deps = next(i for i, line in enumerate(builder) if "uv sync" in line)
    source = next(i for i, line in enumerate(builder) if line.startswith("COPY ml_production_service"))
    assert lock_copy < deps < source
    for flag in ("--locked", "--no-default-groups", "--no-install-project"):
        assert flag in builder[deps]
    install = [line for line in builder[source:] if "uv sync" in line]
    assert install and "--locked" in install[0] and "--no-default-groups" in install[0]
    runtime = [f"{keyword} {arguments}" for keyword, arguments in stages[-1]]
    assert not [line for line in runtime if "uv" in line.split() or "--from=uv" in line]
    assert "COPY registry/prd /app/registry/prd" in runtime


def test_image_runs_as_a_user_it_creates() -> None:
    """The runtime stage creates the user it switches to, by a numeric id Kubernetes runAsNonRoot can check."""
    runtime = dockerfile_stages()[-1]
    user = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert user == ["10001:10001"]
    created = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert "useradd" in created and "--uid 10001" in created and "groupadd" in created and "--gid 10001" in created
    assert [k for k, _ in runtime].index("USER") > max(i for i, (k, _) in enumerate(runtime) if k == "RUN")


def test_image_settings_are_valid_service_settings() -> None:
    """The image configures the service only through real MPS_* settings, with values it accepts."""
    env = image_env()
    config = assert_valid_settings(env)
    assert str(config.registry_dir) == "/app/registry/prd", "the registry the image copies in"
    assert config.api_host == "0.0.0.0"
    assert {k for k in env if not k.startswith("MPS_")} <= {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex.replace(r"\?", "[^/]"), candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_the_image_copies() -> None:
    """The build context holds the package, the lock, the registry and README; not .venv, tests or research."""
    lines = (REPOSITORY / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    copies = [args.split() for keyword, args in dockerfile_instructions() if keyword == "COPY" and "--from" not in args]
    sources = [source for args in copies for source in args[:-1]]
    assert {"pyproject.toml", "uv.lock", "README.md", "ml_production_service", "registry/prd"} == set(sources)
    for source in sources:
        for path in [source, *(str(p.relative_to(REPOSITORY)) for p in (REPOSITORY / source).rglob("*"))]:
            if "__pycache__" not in path:
                assert not _ignored(path, patterns), f"{path} is copied by the Dockerfile but ignored"
    for path in [".venv/bin/python", "tests/functional/test_deployment.py", "research/experiments/common.py"]:
        assert _ignored(path, patterns), f"{path} would be sent to the build"
    assert _ignored("ml_production_service/__pycache__/configs.cpython-311.pyc", patterns)


@pytest.mark.slow
def test_image_healthcheck_passes_on_a_ready_server_and_fails_without_one() -> None:
    """The image's HEALTHCHECK command exits 0 against a ready server on MPS_API_PORT and non-zero with none."""
    command = image_healthcheck()
    assert command[0] == "python" and "/health/ready" in command[-1]
    check = [sys.executable, *command[1:]]
    with running_server(MPS_MODEL_TYPE="decision_tree") as server:
        port = server.url.rsplit(":", 1)[1]
        healthy = subprocess.run(check, env={**os.environ, "MPS_API_PORT": port}, capture_output=True, timeout=30)
    nobody = subprocess.run(
        check, env={**os.environ, "MPS_API_PORT": str(free_port())}, capture_output=True, timeout=30
    )
    assert healthy.returncode == 0, healthy.stderr
    assert nobody.returncode != 0


# --- docker-compose -----------------------------------------------------------------------------------------


COMPOSE_COMBINATIONS = [
    pytest.param((COMPOSE_FILE,), (), id="ab-stack"),
    pytest.param((COMPOSE_FILE,), ("limits",), id="ab-stack-profile-limits"),
    pytest.param((COMPOSE_FILE, LIMITS_COMPOSE_FILE), ("limits",), id="ab-stack-with-rate-limits"),
]
"""Every file and profile combination the compose files and README document."""


@pytest.mark.slow  # runs a Debian tool (make system-tools)
@pytest.mark.parametrize(("files", "profiles"), COMPOSE_COMBINATIONS)
def test_docker_compose_accepts_every_documented_combination(
    files: tuple[Path, ...], profiles: tuple[str, ...]
) -> None:
    """Debian's docker-compose (v1) validates each combination: `docker-compose config --quiet` exits 0."""
    version = subprocess.run([system_tool("docker-compose"), "version", "--short"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip()
    run_compose(files, profiles, "config", "--quiet")


def _documented_compose_runs() -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(files, profiles) of every COMPOSE_FILE=... COMPOSE_PROFILES=... line in the compose files' comments."""
    text = COMPOSE_FILE.read_text(encoding="utf-8") + LIMITS_COMPOSE_FILE.read_text(encoding="utf-8")
    return {
        (tuple(files.split(":")), tuple(profiles.split(",")))
        for files, profiles in re.findall(r"COMPOSE_FILE=(\S+) COMPOSE_PROFILES=(\S+)", text)
    }


def test_the_documented_limits_command_is_a_tested_combination() -> None:
    """The compose files' own `COMPOSE_FILE=... COMPOSE_PROFILES=limits` line is one the test above validates."""
    tested = {(tuple(p.name for p in param.values[0]), tuple(param.values[1])) for param in COMPOSE_COMBINATIONS}
    documented = _documented_compose_runs()
    assert documented, "the limits stack's command is written down"
    assert documented <= tested


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_compose_runs_each_variant_on_its_own_port_with_a_healthcheck_and_limits() -> None:
    """random_forest and decision_tree each get a port, a /health/ready check and CPU and memory limits."""
    config = compose_config()
    variants = variant_services(config)
    assert {"random_forest", "decision_tree"} <= set(variants)
    ports = [port["published"] for service in variants.values() for port in service["ports"]]
    assert len(ports) == len(set(ports)) == len(variants)
    for service in variants.values():
        assert_valid_settings(service["environment"])
        assert service["build"]["context"] == str(REPOSITORY)
        assert "/health/ready" in " ".join(service["healthcheck"]["test"])
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and limits["memory"]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        grace = float(service["stop_grace_period"].rstrip("s"))
        assert grace > float(service["environment"]["MPS_GRACEFUL_TIMEOUT_S"]), "in-flight requests get their time"
        assert [p["target"] for p in service["ports"]] == [ServiceConfig.model_fields["api_port"].default]


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_compose_router_splits_between_the_variants_it_waits_for() -> None:
    """The A/B entry point renders the router template, targets both variants and starts once both are healthy."""
    config = compose_config()
    names = {s.get("environment", {}).get("MPS_MODEL_TYPE"): name for name, s in config["services"].items()}
    router = router_service(config)
    env = router["environment"]
    assert env["NGINX_ENVSUBST_FILTER"] == "^AB_"
    assert env["AB_RANDOM_FOREST_ADDR"] == f"{names['random_forest']}:8000"
    assert env["AB_DECISION_TREE_ADDR"] == f"{names['decision_tree']}:8000"
    assert 0 < float(env["AB_RANDOM_FOREST_PERCENT"]) <= 100
    assert router["depends_on"] == {
        names["random_forest"]: {"condition": "service_healthy"},
        names["decision_tree"]: {"condition": "service_healthy"},
    }
    assert router["ports"][0]["target"] == int(env["AB_LISTEN"])
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+-alpine", router["image"])
    assert router["healthcheck"]["test"] and router["deploy"]["resources"]["limits"]["memory"]
    template_vars = set(re.findall(r"\$\{(\w+)\}", ROUTER_TEMPLATE.read_text(encoding="utf-8")))
    assert template_vars == {k for k in env if k.startswith("AB_")}, "every template variable is set, no other"


def _redis_service(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The compose service running Redis: (its name, its settings)."""
    (found,) = [(name, s) for name, s in config["services"].items() if s["image"].startswith("redis:")]
    return found


def _compose_bytes(value: str) -> int:
    """A compose or Redis size (``64M``, ``48mb``) in bytes."""
    match = re.fullmatch(r"(\d+)([kmg]?)b?", value.lower())
    assert match, value
    return int(match[1]) * 1024 ** " kmg".index(match[2] or " ")


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_compose_redis_is_pinned_private_hardened_and_only_in_the_limits_profile() -> None:
    """Redis: an exact image tag, the `limits` profile, no published port, read-only, no persistence, a health check."""
    name, redis = _redis_service(compose_config())
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", redis["image"]), "pinned to an exact version"
    assert redis["profiles"] == ["limits"], "`docker-compose up` alone does not start it"
    assert "ports" not in redis, "reachable only on the stack's network"
    assert redis["read_only"] is True and redis["tmpfs"] == ["/data"] and redis["cap_drop"] == ["ALL"]
    assert redis["user"] == "redis" and "no-new-privileges:true" in redis["security_opt"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--save"] == "" and options["--appendonly"] == "no", "counters only: nothing written to disk"
    memory = _compose_bytes(redis["deploy"]["resources"]["limits"]["memory"])
    assert memory <= 128 * 1024**2
    assert _compose_bytes(options["--maxmemory"]) < memory, "Redis evicts before the container is killed"
    assert options["--maxmemory-policy"] == "allkeys-lru"
    assert name not in {s for service in compose_config()["services"].values() for s in service.get("depends_on", {})}


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_compose_limits_file_shares_one_rate_limit_in_redis_between_the_variants() -> None:
    """With docker-compose.limits.yml both variants count in the profile's Redis, wait for it, and can take a
    largest batch; without it they keep the service's defaults (no limit, memory storage)."""
    config = compose_config((COMPOSE_FILE, LIMITS_COMPOSE_FILE), ("limits",))
    name, _ = _redis_service(config)
    variants = variant_services(config)
    assert set(variants) == {"random_forest", "decision_tree"}
    for service in variants.values():
        env = service["environment"]
        settings = assert_valid_settings(env)
        assert settings.rate_limit_storage == f"redis://{name}:6379/0"
        assert settings.rate_limit is not None
        assert min(item.amount for item in parse_rate_limit(settings.rate_limit)) >= settings.max_batch_size
        assert service["depends_on"] == {name: {"condition": "service_healthy"}}
    assert len({service["environment"]["MPS_RATE_LIMIT"] for service in variants.values()}) == 1, "one limit"
    for service in variant_services(compose_config()).values():
        settings = assert_valid_settings(service["environment"])
        assert settings.rate_limit is None and settings.rate_limit_storage == "memory://"
        assert "depends_on" not in service


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_compose_variants_trust_the_routers_x_forwarded_for_and_no_one_elses() -> None:
    """MPS_TRUSTED_PROXIES is the router's pinned address alone: the router names its client, and a client calling a
    variant's published port (through the network's gateway) cannot name another one."""
    config = compose_config()
    (network,) = config["networks"]["default"]["ipam"]["config"]
    subnet, dynamic = ipaddress.ip_network(network["subnet"]), ipaddress.ip_network(network["ip_range"])
    router_address = ipaddress.ip_address(router_service(config)["networks"]["default"]["ipv4_address"])
    assert router_address in subnet and router_address not in dynamic, "no other container can get its address"
    gateway = str(next(subnet.hosts()))
    for service in variant_services(config).values():
        trusted = parse_networks(assert_valid_settings(service["environment"]).trusted_proxies)
        assert trusted == (ipaddress.ip_network(router_address),)
        clients = ClientAddresses(trusted)
        forwarded = [(b"x-forwarded-for", b"198.51.100.9, 203.0.113.7")]  # a forged hop, then what nginx added
        assert clients.client(str(router_address), forwarded) == "203.0.113.7"
        assert clients.client(gateway, forwarded) == gateway, "only the router is believed"


def test_compose_router_tells_the_variants_who_the_client_is() -> None:
    """The router sends X-Forwarded-For (the client's, plus the address it saw) and X-Real-IP to the variants."""
    proxied = [
        arguments
        for blocks, name, arguments in router_directives()
        if blocks == ("server", "location /") and name == "proxy_set_header"
    ]
    assert ["X-Forwarded-For", "$proxy_add_x_forwarded_for"] in proxied
    assert ["X-Real-IP", "$remote_addr"] in proxied


def _nginx_seconds(value: str) -> float:
    """An nginx time (``10s``, ``500ms``, ``1m``) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, value
    return int(match[1]) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[match[2]]


def _nginx_bytes(value: str) -> int:
    """An nginx size (``8k``, ``1m``) in bytes."""
    match = re.fullmatch(r"(\d+)([kKmM]?)", value)
    assert match, value
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024 * 1024}[match[2].lower()]


def _router_map(variable: str) -> dict[str, str]:
    """The entries of the template's ``map ... $variable`` block."""
    (source,) = {b[0] for b, _, _ in router_directives() if b and b[0].startswith("map ") and b[0].endswith(variable)}
    return {name: arguments[0] for blocks, name, arguments in router_directives() if blocks == (source,)}


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_compose_router_limits_are_no_looser_than_the_services() -> None:
    """The router's header, body, timeout and keep-alive limits sit within each variant's MPS_* settings."""
    server = server_directives()
    directives = router_directives()
    count, size = server["large_client_header_buffers"]
    upstream_keepalive = [
        _nginx_seconds(arguments[0])
        for blocks, name, arguments in directives
        if blocks[:1] and blocks[0].startswith("upstream ") and name == "keepalive_timeout"
    ]
    variants = variant_services(compose_config())
    assert len(upstream_keepalive) == len(variants)
    for service in variants.values():
        app = assert_valid_settings(service["environment"])
        assert _nginx_bytes(server["client_header_buffer_size"][0]) <= _nginx_bytes(size)
        assert int(count) * _nginx_bytes(size) <= app.max_header_bytes, "request line and headers"
        assert _nginx_seconds(server["client_header_timeout"][0]) <= app.header_timeout_s
        assert _nginx_seconds(server["client_body_timeout"][0]) <= app.body_timeout_s
        assert _nginx_bytes(server["client_max_body_size"][0]) <= app.max_body_bytes
        assert _nginx_seconds(server["keepalive_timeout"][0]) <= app.keep_alive_timeout_s
        assert max(upstream_keepalive) < app.keep_alive_timeout_s, "nginx drops an idle upstream connection first"
        grace = float(service["stop_grace_period"].rstrip("s"))
        for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
            assert app.graceful_timeout_s <= _nginx_seconds(server[timeout][0]) < grace, "a draining request ends"
    assert _nginx_seconds(server["proxy_connect_timeout"][0]) <= 10
    assert _nginx_seconds(server["send_timeout"][0]) <= _nginx_seconds(server["client_body_timeout"][0])
    assert 0 < int(server["keepalive_requests"][0]) <= 10_000
    assert server["proxy_request_buffering"] == ["on"], "a slow upload is nginx's to hold, not the service's"
    assert server["reset_timedout_connection"] == ["on"]
    zone, limit = server["limit_conn"]
    (zone_definition,) = [arguments for _, name, arguments in directives if name == "limit_conn_zone"]
    assert zone_definition[0] == "$binary_remote_addr" and zone_definition[1].startswith(f"zone={zone}:")
    assert 0 < int(limit) < 1024, "below the nginx image's worker_connections"
    assert server["limit_conn_status"] == ["503"]


def test_compose_router_answers_its_own_errors_in_the_services_error_shape() -> None:
    """nginx's own 400, 413, 414, 431 (its 494), 502, 503 and 504 are JSON in errors.py's shape, quoting its limits."""
    directives = router_directives()
    server = server_directives()
    pages = [arguments for blocks, name, arguments in directives if blocks == ("server",) and name == "error_page"]
    (target,) = {arguments[-1] for arguments in pages}
    statuses = {code for arguments in pages for code in arguments[:-1] if not code.startswith("=")}
    assert statuses == {"400", "413", "414", "494", "502", "503", "504"}
    assert ["494", "=431", target] in pages, "nginx's 'request header too large' is the service's 431"
    in_page = [
        (name, arguments) for blocks, name, arguments in directives if blocks == ("server", f"location = {target}")
    ]
    page = dict(in_page)
    assert page["internal"] == [] and page["default_type"] == ["application/json"]
    assert ("add_header", ["X-Request-ID", "$mps_request_id", "always"]) in in_page
    assert "proxy_intercept_errors" not in {name for _, name, _ in directives}, "the service's own errors pass"
    codes, messages = _router_map("$mps_error_code"), _router_map("$mps_error_message")
    shape = json.loads(error_body(ApiError(400, "code", "message"), "id"))
    for status in statuses - {"494"} | {"431"}:
        body = (
            page["return"][1].replace("$mps_error_code", codes[status]).replace("$mps_error_message", messages[status])
        )
        error = json.loads(body.replace("$mps_request_id", "id"))
        assert set(error) == set(shape) and error["details"] == [] and error["request_id"] == "id"
    assert codes["413"] == BodyTooLarge(1024).code, "the service's own code for the same refusal"
    count, size = server["large_client_header_buffers"]
    assert f"{_nginx_bytes(server['client_max_body_size'][0])} bytes" in messages["413"]
    assert f"{_nginx_bytes(size)} bytes" in messages["414"]
    assert (
        f"{int(count) * _nginx_bytes(size)} bytes in all or {_nginx_bytes(size)} bytes in one line" in messages["431"]
    )
    assert f"limit_conn, {server['limit_conn'][1]})" in messages["503"]
    assert f"{_nginx_seconds(server['proxy_read_timeout'][0]):g} s" in messages["504"]


@pytest.mark.parametrize("request_id", ["ab-trace-1", "A.b_c:d-1", "x" * 128, "x" * 129, 'a"b', "a b", "é", "{}"])
def test_compose_router_forwards_the_request_ids_the_service_keeps(request_id: str) -> None:
    """The router passes on (and writes into its JSON) exactly the X-Request-ID values the service itself keeps."""
    (pattern,) = [name for name in _router_map("$mps_request_id") if name.startswith("~")]
    kept_by_router = re.search(pattern[1:], request_id) is not None
    kept_by_service = request_id_from([(b"x-request-id", request_id.encode())]) == request_id
    assert kept_by_router == kept_by_service


# --- Kubernetes ---------------------------------------------------------------------------------------------


def _kubernetes_validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    return subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", *versions, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kubernetes_validate_passes_every_manifest_strictly() -> None:
    """kubernetes-validate --strict accepts every resource in k8s/ on Kubernetes 1.30 and 1.37, none unchecked."""
    result = _kubernetes_validate(k8s_manifest_files())
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if not line.startswith("INFO ")], result.stdout
    assert len(lines) == len(k8s_documents()) * len(KUBERNETES_VERSIONS)
    kinds = {d["kind"] for d in k8s_documents()}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_make_k8s_validate_checks_every_manifest() -> None:
    """`make k8s-validate` gives kubernetes-validate every manifest and the InferenceService to its schema check."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "k8s-validate"], cwd=REPOSITORY, capture_output=True, text=True
    )
    assert dry_run.returncode == 0, dry_run.stderr
    commands = dry_run.stdout.split()
    for path in [*k8s_manifest_files(), *(K8S / "kserve").glob("*.yaml")]:
        assert str(path.relative_to(REPOSITORY)) in commands
    for version in KUBERNETES_VERSIONS:
        assert commands.count(version) == 2


def test_kubernetes_validate_rejects_a_misspelled_field(tmp_path: Path) -> None:
    """Strict validation is live: a misspelled probe field in the Deployment is an error."""
    deployment = copy.deepcopy(k8s_resource("Deployment", "mps-stable"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readynessProbe"] = container.pop("readinessProbe")
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(deployment), encoding="utf-8")
    result = _kubernetes_validate([broken])
    assert result.returncode != 0 and "readynessProbe" in result.stdout


@pytest.mark.parametrize("track", ["stable", "canary"])
def test_deployment_probes_resources_and_security(track: str) -> None:
    """Each track probes readiness and liveness, has requests and limits, and runs non-root on a read-only root."""
    deployment = k8s_resource("Deployment", f"mps-{track}")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", API_KEYS_MOUNT}
    (model_type,) = [e for e in container["env"] if e["name"] == "MPS_MODEL_TYPE"]
    reference = model_type["valueFrom"]["configMapKeyRef"]
    assert reference == {"name": "mps-models", "key": track}
    shared = k8s_resource("ConfigMap", "mps-config")["data"]
    assert container["envFrom"] == [{"configMapRef": {"name": "mps-config"}}]
    env = {**shared, "MPS_MODEL_TYPE": k8s_resource("ConfigMap", "mps-models")["data"][track]}
    config = assert_valid_settings(env)
    assert container["ports"][0]["containerPort"] == config.api_port
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config.graceful_timeout_s, "SIGKILL comes after drain"


API_KEYS_MOUNT = "/etc/mps/keys"
API_KEYS_SECRET = "mps-api-keys"


def _api_keys_text() -> str:
    """The keys file the Secret holds (its ``keys`` entry)."""
    secret = k8s_resource("Secret", API_KEYS_SECRET)
    assert secret["type"] == "Opaque" and set(secret["stringData"]) == {"keys"} and "data" not in secret
    return str(secret["stringData"]["keys"])


def test_api_keys_secret_is_a_valid_keys_file_holding_only_a_marked_placeholder(tmp_path: Path) -> None:
    """The Secret's file is one the service loads, and its one line is a marked placeholder no key can match."""
    text = _api_keys_text()
    keys_file = tmp_path / "keys"
    keys_file.write_text(text, encoding="utf-8")
    (placeholder,) = load_keys(keys_file)
    assert placeholder.key_id == "example" and placeholder.digest == bytes(32), "64 zeros: no key's sha256"
    assert "PLACEHOLDER" in text and "make api-key" in text
    ring = KeyRing(load_keys(keys_file))
    assert ring.identify(b"") is None and ring.identify(b"example") is None


@pytest.mark.parametrize("track", ["stable", "canary"])
def test_each_track_mounts_the_api_keys_read_only_where_the_configmap_says(track: str) -> None:
    """Both tracks mount the Secret read-only at /etc/mps/keys, readable by the pod's group only (fsGroup, 0440);
    the ConfigMap keeps auth off by default and names that file as the value that turns it on."""
    pod = k8s_resource("Deployment", f"mps-{track}")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == API_KEYS_MOUNT]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": API_KEYS_SECRET, "defaultMode": 0o440}
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 10001
    config_map = (K8S / "configmap.yaml").read_text(encoding="utf-8")
    assert k8s_resource("ConfigMap", "mps-config")["data"]["MPS_API_KEYS_FILE"] == "", "auth is off by default"
    assert f"set this to {API_KEYS_MOUNT}/keys" in config_map, "the value that turns it on is the mounted file"


def test_configmap_guard_settings_are_valid_off_and_turned_on(tmp_path: Path) -> None:
    """mps-config starts the service with keys and limits off; set as its comments say (the mounted Secret, a limit),
    the same settings are still valid: Redis by its Service name, the ingress's pod network trusted."""
    shared = k8s_resource("ConfigMap", "mps-config")["data"]
    env = {**shared, "MPS_MODEL_TYPE": k8s_resource("ConfigMap", "mps-models")["data"]["stable"]}
    off = assert_valid_settings(env)
    assert off.api_keys_file is None and off.rate_limit is None
    assert re.fullmatch(r"redis://[a-z0-9]([-a-z0-9]*[a-z0-9])?:6379/0", off.rate_limit_storage), "a Service name"
    assert parse_networks(off.trusted_proxies), "someone's X-Forwarded-For is believed: the ingress's"
    keys_file = tmp_path / "keys"
    keys_file.write_text(_api_keys_text(), encoding="utf-8")
    on = assert_valid_settings({**env, "MPS_API_KEYS_FILE": str(keys_file), "MPS_RATE_LIMIT": "1000/second"})
    assert on.api_keys_file == keys_file and on.rate_limit == "1000/second"
    assert on.rate_limit_storage == off.rate_limit_storage


def test_canary_serves_the_other_model_behind_the_same_service() -> None:
    """The Service selects both tracks; the canary serves another model with fewer replicas than stable."""
    models = k8s_resource("ConfigMap", "mps-models")["data"]
    assert models["stable"] != models["canary"]
    assert {models["stable"], models["canary"]} <= {m.value for m in ModelType}
    selector = k8s_resource("Service", "ml-production-service")["spec"]["selector"]
    stable, canary = (k8s_resource("Deployment", f"mps-{t}") for t in ("stable", "canary"))
    for deployment in (stable, canary):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "track" not in selector
    assert 0 < canary["spec"]["replicas"] < stable["spec"]["replicas"]
    hpa = k8s_resource("HorizontalPodAutoscaler", "mps-stable")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mps-stable"}
    assert hpa["minReplicas"] == stable["spec"]["replicas"] < hpa["maxReplicas"]
    pdb = k8s_resource("PodDisruptionBudget", "ml-production-service")["spec"]
    assert pdb["selector"]["matchLabels"] == selector and pdb["maxUnavailable"] == 1


def test_kustomization_applies_every_manifest_with_the_package_version() -> None:
    """`kubectl apply -k k8s/` covers every plain manifest and tags the image with the package version."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_manifest_files())
    (image,) = kustomization["images"]
    assert image["newTag"] == __version__
    containers = [
        c for d in k8s_documents() if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert {c["image"] for c in containers} == {f"{image['name']}:{__version__}"}


def _validate_kserve(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    return subprocess.run(
        [sys.executable, str(REPOSITORY / "deploy" / "validate_kserve.py"), *versions, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_inference_service_is_checked_by_its_schema_since_kubernetes_validate_cannot() -> None:
    """kubernetes-validate has no KServe schema (it only warns); the project's schema check passes it."""
    (manifest,) = (K8S / "kserve").glob("*.yaml")
    unchecked = _kubernetes_validate([manifest])
    assert unchecked.returncode == 0 and "Couldn't find schema for kind InferenceService" in unchecked.stdout
    result = _validate_kserve([manifest])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource inferenceservice/") == len(KUBERNETES_VERSIONS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda p: p["containers"][0].update(readynessProbe={}), "readynessProbe", id="container-typo"),
        pytest.param(lambda p: p.update(minReplica=1), "minReplica", id="predictor-typo"),
        pytest.param(lambda p: p.update(minReplicas="two"), "'two' is not of type 'integer'", id="replicas-type"),
        pytest.param(lambda p: p["containers"][0].update(name="mps"), "does not contain", id="container-name"),
        pytest.param(lambda p: p["containers"][0].pop("image"), "'image' is a required", id="no-image"),
    ],
)
def test_inference_service_schema_rejects_broken_manifests(tmp_path: Path, change: Any, message: str) -> None:
    """The InferenceService check is not vacuous: typos, wrong types and a misnamed container are errors."""
    (manifest,) = (K8S / "kserve").glob("*.yaml")
    document = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    change(document["spec"]["predictor"])
    broken = tmp_path / "inferenceservice.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = _validate_kserve([broken])
    assert result.returncode == 1
    assert message in result.stdout


def test_inference_service_runs_the_image_as_a_v2_custom_predictor() -> None:
    """KServe's container listens where the service does and probes the V2 health routes; settings are valid."""
    (manifest,) = (K8S / "kserve").glob("*.yaml")
    predictor = yaml.safe_load(manifest.read_text(encoding="utf-8"))["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == f"ml-production-service:{__version__}"
    config = assert_valid_settings({e["name"]: e["value"] for e in container["env"]})
    assert container["ports"][0]["containerPort"] == config.api_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": config.api_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": config.api_port}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert predictor["securityContext"]["runAsNonRoot"] is True


def test_ecs_task_definition_runs_the_image_like_the_other_platforms() -> None:
    """The ECS task runs the versioned image as user 10001, read-only, checked on /health/ready, with valid settings."""
    task = json.loads((REPOSITORY / "deploy" / "ecs" / "task-definition.json").read_text(encoding="utf-8"))
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
    (container,) = task["containerDefinitions"]
    assert container["image"].endswith(f"/ml-production-service:{__version__}")
    assert container["user"] == "10001:10001" and container["readonlyRootFilesystem"] is True
    assert [m["containerPath"] for m in container["mountPoints"]] == ["/tmp"]
    assert {v["name"] for v in task["volumes"]} == {m["sourceVolume"] for m in container["mountPoints"]}
    config = assert_valid_settings({e["name"]: e["value"] for e in container["environment"]})
    assert [p["containerPort"] for p in container["portMappings"]] == [config.api_port]
    assert (
        container["healthCheck"]["command"][0] == "CMD" and "/health/ready" in container["healthCheck"]["command"][-1]
    )
    assert container["stopTimeout"] > config.graceful_timeout_s


# --- make targets and the README ----------------------------------------------------------------------------


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_system_tools_is_quick_when_the_tools_are_installed() -> None:
    """`make system-tools` (what `make all-test` runs first) does nothing, fast, once the tools are there."""
    for tool in ("nginx", "docker-compose", "wrk", "envsubst", "redis-server"):
        system_tool(tool)
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "system-tools"], cwd=REPOSITORY, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and time.monotonic() - started < 5


def _deployment_section() -> str:
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- deployment:start -->", 1)[1].split("<!-- deployment:end -->", 1)[0]
    assert section.strip(), "the README's deployment section is written"
    return section


def _make_targets() -> set[str]:
    makefiles = [REPOSITORY / "Makefile", *(REPOSITORY / "mk").glob("*.mk")]
    text = "\n".join(p.read_text(encoding="utf-8") for p in makefiles)
    return set(re.findall(r"^([a-zA-Z0-9_-]+):", text, re.MULTILINE))


def test_readme_deployment_section_names_files_and_targets_that_exist() -> None:
    """Every file, make target and Kubernetes object the README's deployment section names exists."""
    section = _deployment_section()
    paths = set(
        re.findall(
            r"(?<![\w./-])((?:k8s|deploy|mk|registry|scripts)/[\w./-]*|Dockerfile|\.dockerignore|"
            r"docker-compose\.yml)",
            section,
        )
    )
    assert {"Dockerfile", "docker-compose.yml", "k8s/", "deploy/nginx/ab.conf.template"} <= paths
    for path in paths:
        assert (REPOSITORY / path.rstrip(".")).exists(), f"README names {path}, which does not exist"
    code = "\n".join(
        block or inline for block, inline in re.findall(r"```bash\n(.*?)```|`([^`\n]+)`", section, re.DOTALL)
    )
    targets = set(re.findall(r"\bmake ([a-z0-9-]+)", re.sub(r"\s#.*", "", code)))
    assert {"service-quick-start", "service-start", "service-stop", "service-validate", "k8s-validate"} <= targets
    assert targets <= _make_targets()
    for name in re.findall(r"`([\w.-]+\.(?:yaml|yml|json|template|py))`", section):
        assert [p for p in REPOSITORY.glob(f"[!.]*/**/{name}") if ".venv" not in p.parts] or (
            REPOSITORY / name
        ).exists()
    resources = {(d["kind"].lower(), d["metadata"]["name"]) for d in k8s_documents()}
    for kind, name in re.findall(r"(?<![\w-])(deployment|service|configmap|hpa|pdb)/([a-z0-9-]+)", section):
        kind = {"hpa": "horizontalpodautoscaler", "pdb": "poddisruptionbudget"}.get(kind, kind)
        assert (kind, name) in resources, f"README names {kind}/{name}, which k8s/ does not define"


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_readme_deployment_commands_use_the_files_settings() -> None:
    """The README's ports, image tag and settings are the ones the compose file, Makefile and manifests use."""
    section = _deployment_section()
    config = compose_config()
    for service in [*variant_services(config).values(), router_service(config)]:
        assert f"localhost:{service['ports'][0]['published']}" in section
    assert "AB_RANDOM_FOREST_PERCENT" in section and "X-Model-Variant" in section
    assert f"ml-production-service:{__version__}" in section
    for variable in set(re.findall(r"\bMPS_[A-Z_]+", section)):
        assert variable[len("MPS_") :].lower() in ServiceConfig.model_fields, variable
