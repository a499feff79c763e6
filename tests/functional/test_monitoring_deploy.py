"""Monitoring deployment: the compose `monitoring` profile, Grafana's dashboard, and the prometheus-operator manifests.

No Docker engine runs here: compose is proven by Debian's ``docker-compose config``, Prometheus's and
Alertmanager's configurations by ``promtool check config`` and ``amtool check-config``, the dashboard's queries
by promtool's parser and the list of series the service exports, and k8s/monitoring/ by
deploy/prometheus/monitoring_manifests.py on its JSON schemas (kubernetes-validate has none for these CRDs).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.functional.deploy_helpers import (
    COMPOSE_FILE,
    K8S,
    KUBERNETES_VERSIONS,
    LIMITS_COMPOSE_FILE,
    compose_config,
    k8s_resource,
    system_tool,
    variant_services,
)
from tests.functional.server_process import REPOSITORY
from tests.functional.test_monitoring_rules import RULES, rules, unknown_selectors

PROMETHEUS = REPOSITORY / "deploy" / "prometheus"
GRAFANA = REPOSITORY / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ml-production-service.json"
MONITORING = K8S / "monitoring"
MANIFESTS_SCRIPT = PROMETHEUS / "monitoring_manifests.py"
MONITORING_IMAGES = {
    "prometheus": r"prom/prometheus:v\d+\.\d+\.\d+",
    "alertmanager": r"prom/alertmanager:v\d+\.\d+\.\d+",
    "grafana": r"grafana/grafana:\d+\.\d+\.\d+",
}
"""The monitoring services, by the image each runs (pinned to an exact version)."""
HEALTH_PATHS = {"prometheus": "/-/ready", "alertmanager": "/-/ready", "grafana": "/api/health"}


def _monitoring_services(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The compose services of the monitoring profile, by role: (their name, their settings)."""
    found = {}
    for role, image in MONITORING_IMAGES.items():
        (match,) = [(n, s) for n, s in config["services"].items() if s["image"].startswith(image.split(":")[0] + ":")]
        found[role] = match
    return found


def _mounts(service: dict[str, Any]) -> dict[Path, str]:
    """A compose service's bind mounts: the repository path -> the path in the container."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[Path(source)] = target
    return mounts


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query on the dashboard."""
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


# --- docker-compose ------------------------------------------------------------------------------------------

MONITORING_COMBINATIONS = [
    pytest.param((COMPOSE_FILE,), ("monitoring",), id="ab-stack-with-monitoring"),
    pytest.param((COMPOSE_FILE, LIMITS_COMPOSE_FILE), ("limits", "monitoring"), id="rate-limits-with-monitoring"),
]


@pytest.mark.slow  # runs a Debian tool (make system-tools)
@pytest.mark.parametrize(("files", "profiles"), MONITORING_COMBINATIONS)
def test_docker_compose_accepts_the_monitoring_profile(files: tuple[Path, ...], profiles: tuple[str, ...]) -> None:
    """Debian's docker-compose accepts the stack with the monitoring profile, alone and with the limits one (what
    `make deploy-lint` checks with `config --quiet`), and it holds Prometheus, Alertmanager and Grafana."""
    config = compose_config(files, profiles)
    assert set(_monitoring_services(config)) == set(MONITORING_IMAGES)
    assert {"random_forest", "decision_tree"} <= set(variant_services(config))


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_monitoring_services_are_pinned_local_only_checked_and_only_in_their_profile() -> None:
    """Prometheus, Alertmanager and Grafana: official images at exact versions, the `monitoring` profile only,
    published on 127.0.0.1 alone, with a health check and a memory limit; nothing of the A/B stack waits for them."""
    config = compose_config(profiles=("monitoring",))
    services = _monitoring_services(config)
    for role, (name, service) in services.items():
        assert re.fullmatch(MONITORING_IMAGES[role], service["image"]), f"{name} is not pinned to an exact version"
        assert service["profiles"] == ["monitoring"], f"`docker-compose up` alone does not start {name}"
        for port in service["ports"]:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        check = service["healthcheck"]["test"]
        assert check[:2] == ["CMD", "wget"] and check[-1].endswith(HEALTH_PATHS[role]), f"{name} is health-checked"
        assert service["deploy"]["resources"]["limits"]["memory"]
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
    names = {name for name, _ in services.values()}
    for name, service in config["services"].items():
        if name not in names:
            assert not names & set(service.get("depends_on", {})), f"{name} waits for a monitoring service"
    assert services["grafana"][1]["depends_on"] == {services["prometheus"][0]: {"condition": "service_healthy"}}


@pytest.mark.slow  # runs Debian tools (make system-tools)
def test_prometheus_scrapes_every_variant_as_the_alerts_job_and_loads_the_rules() -> None:
    """prometheus.yml (valid for promtool, rules included) scrapes every model variant of the compose file on its
    service name and port, as the job the alerts watch, evaluates rules.yml mounted beside it, and alerts the
    stack's Alertmanager."""
    check = subprocess.run(
        [system_tool("promtool"), "check", "config", "deploy/prometheus/prometheus.yml"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    config = compose_config(profiles=("monitoring",))
    services = _monitoring_services(config)
    prometheus = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = prometheus["scrape_configs"]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    variants = {name: s for name, s in config["services"].items() if s in variant_services(config).values()}
    assert targets == {f"{name}:{s['ports'][0]['target']}" for name, s in variants.items()}
    watched = re.findall(r'up\{job="([^"]+)"\}', next(r["expr"] for r in rules() if r.get("alert") == "MPSTargetDown"))
    assert set(watched) == {job["job_name"]}
    mounts = _mounts(services["prometheus"][1])
    config_in_container = Path(mounts[PROMETHEUS / "prometheus.yml"])
    assert prometheus["rule_files"] == [RULES.name]
    assert Path(mounts[RULES]) == config_in_container.parent / RULES.name, "rule_files is relative to the config"
    assert f"--config.file={config_in_container}" in services["prometheus"][1]["command"]
    (alertmanagers,) = prometheus["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == [f"{services['alertmanager'][0]}:9093"]


@pytest.mark.slow  # runs Debian tools (make system-tools)
def test_alertmanager_sends_every_alert_to_a_default_webhook_receiver() -> None:
    """alertmanager.yml is valid for amtool; its route ends at one receiver, a webhook whose URL is a marked
    placeholder that never resolves; compose mounts it where the command reads it."""
    path = PROMETHEUS / "alertmanager.yml"
    check = subprocess.run(
        [system_tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["route"]["receiver"] == "default"
    assert {r.get("receiver", "default") for r in config["route"].get("routes", [])} <= {"default"}
    (receiver,) = config["receivers"]
    (webhook,) = receiver["webhook_configs"]
    assert receiver["name"] == "default" and webhook["url"].startswith("http://alert-webhook.invalid/")
    assert "placeholder" in path.read_text(encoding="utf-8")
    _, alertmanager = _monitoring_services(compose_config(profiles=("monitoring",)))["alertmanager"]
    assert f"--config.file={_mounts(alertmanager)[path]}" in alertmanager["command"]


# --- Grafana -------------------------------------------------------------------------------------------------


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    """Grafana reads its provisioning and the dashboard where compose mounts them: the datasource is the stack's
    Prometheus under the uid every panel names, the dashboard folder is the provider's path and the home page."""
    config = compose_config(profiles=("monitoring",))
    services = _monitoring_services(config)
    _, grafana = services["grafana"]
    mounts = _mounts(grafana)
    assert mounts[GRAFANA / "provisioning"] == "/etc/grafana/provisioning"
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prometheus_port = services["prometheus"][1]["ports"][0].split(":")[-1].split("/")[0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://{services['prometheus'][0]}:{prometheus_port}"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ml-production-service.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == mounts[DASHBOARD.parent]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{mounts[DASHBOARD.parent]}/{DASHBOARD.name}"
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    used = {p["datasource"]["uid"] for p in panels if "datasource" in p}
    used |= {t["datasource"]["uid"] for p in panels for t in p.get("targets", [])}
    assert used == {datasource["uid"]}


def test_every_dashboard_panel_has_a_title_and_queries_only_known_series() -> None:
    """Every panel (rows included) has a title of its own; every query selects only series the service exports,
    `up` or a series rules.yml records, with labels they have."""
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    titles = [p.get("title", "").strip() for p in panels]
    assert all(titles) and len(titles) == len(set(titles))
    assert sum(1 for p in panels if p["type"] != "row" and p.get("targets")) >= 10
    for title, expr in _dashboard_exprs():
        assert not unknown_selectors(expr), title
    assert len({p["id"] for p in panels}) == len(panels)


def test_dashboard_shows_traffic_errors_latency_drift_classes_and_versions() -> None:
    """The dashboard has traffic, the 5xx ratio, latency p50 and p99, PSI per feature, class shares and the
    served model versions."""
    exprs = " ".join(expr for _, expr in _dashboard_exprs())
    for needed in (
        "rate(mps_http_requests_total",
        'status=~"5.."',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "mps:input_psi:1h",
        "mps:class_share:1h",
        "mps_model_info",
    ):
        assert needed in exprs, needed


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (each written as a recording rule; Grafana's $__rate_interval as 1m)."""
    exprs = [expr.replace("$__rate_interval", "1m") for _, expr in _dashboard_exprs()]
    rule_file = tmp_path / "dashboard.rules.yml"
    recording = [{"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(exprs)]
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}), encoding="utf-8")
    result = subprocess.run(
        [system_tool("promtool"), "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


# --- Kubernetes (prometheus-operator) ------------------------------------------------------------------------


def _validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    return subprocess.run(
        [sys.executable, str(MANIFESTS_SCRIPT), "validate", *versions, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _manifest(kind: str) -> dict[str, Any]:
    (document,) = [d for p in MONITORING.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d["kind"] == kind]
    return dict(document)


def _manifests_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("monitoring_manifests", MANIFESTS_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_monitoring_manifests_pass_their_schemas_and_carry_the_rules() -> None:
    """The PrometheusRule and the ServiceMonitor pass their schemas on Kubernetes 1.30 and 1.37, and the
    PrometheusRule's groups are rules.yml's."""
    paths = sorted(MONITORING.glob("*.yaml"))
    assert [p.name for p in paths] == ["prometheusrule.yaml", "servicemonitor.yaml"]
    result = _validate(paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(paths) * len(KUBERNETES_VERSIONS)
    assert _manifest("PrometheusRule")["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_prometheus_rule_is_what_the_script_writes_from_rules_yml() -> None:
    """k8s/monitoring/prometheusrule.yaml is exactly what `monitoring_manifests.py write` makes of rules.yml, its
    comments (the thresholds' reasons) included: rewriting it changes nothing."""
    path = MONITORING / "prometheusrule.yaml"
    text = path.read_text(encoding="utf-8")
    assert _manifests_script().render_prometheus_rule(text, RULES.read_text(encoding="utf-8")) == text
    assert "# PSI_MAX, MIN_ROWS_1H." in text


def _typo_in_endpoint(d: dict[str, Any]) -> None:
    d["spec"]["endpoints"][0]["intervall"] = d["spec"]["endpoints"][0].pop("interval")


def _recording_rule_with_for(d: dict[str, Any]) -> None:
    d["spec"]["groups"][0]["rules"][0]["for"] = "5m"


def _rule_changed(d: dict[str, Any]) -> None:
    d["spec"]["groups"][0]["rules"][-1]["for"] = "1h"


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        pytest.param("ServiceMonitor", _typo_in_endpoint, "'intervall' was unexpected", id="endpoint-typo"),
        pytest.param(
            "ServiceMonitor",
            lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"),
            "does not match",
            id="bad-duration",
        ),
        pytest.param(
            "ServiceMonitor", lambda d: d["spec"].pop("selector"), "'selector' is a required", id="no-selector"
        ),
        pytest.param(
            "ServiceMonitor",
            lambda d: d["spec"]["selector"].update(matchLabel={"a": "b"}),
            "'matchLabel' was unexpected",
            id="selector-typo",
        ),
        pytest.param("PrometheusRule", _recording_rule_with_for, "is not valid under any", id="record-with-for"),
        pytest.param("PrometheusRule", _rule_changed, "not the groups of deploy/prometheus/rules.yml", id="drifted"),
        pytest.param(
            "PrometheusRule", lambda d: d["metadata"].update(lables={}), "'lables' was unexpected", id="metadata-typo"
        ),
    ],
)
def test_monitoring_schemas_reject_broken_manifests(tmp_path: Path, kind: str, change: Any, message: str) -> None:
    """The check is not vacuous: typos (in the CRD's fields, the Kubernetes label selector and metadata), a bad
    duration, a missing selector, a recording rule with an alert's field, and rules that differ from rules.yml
    are all errors."""
    document = copy.deepcopy(_manifest(kind))
    change(document)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = _validate([broken])
    assert result.returncode == 1
    assert message in result.stdout, result.stdout


def test_service_monitor_scrapes_the_service_as_the_job_the_alerts_watch() -> None:
    """The ServiceMonitor selects k8s/service.yaml's Service by its labels, scrapes its named port on /metrics,
    and the job Prometheus gives those targets (the Service's name) is the one MPSTargetDown watches; the pod label
    it copies is on both tracks' pods."""
    monitor = _manifest("ServiceMonitor")["spec"]
    service = k8s_resource("Service", "ml-production-service")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert "jobLabel" not in monitor, "the job is the Service's name"
    down = next(r["expr"] for r in rules() if r.get("alert") == "MPSTargetDown")
    assert set(re.findall(r'up\{job="([^"]+)"\}', down)) == {service["metadata"]["name"]}
    for track in ("stable", "canary"):
        labels = k8s_resource("Deployment", f"mps-{track}")["spec"]["template"]["metadata"]["labels"]
        assert set(monitor["podTargetLabels"]) <= set(labels)


def test_make_targets_check_the_monitoring_files() -> None:
    """`make k8s-validate` checks every k8s/monitoring manifest on both Kubernetes versions; `make deploy-lint`
    checks the monitoring profile, prometheus.yml, the rules' unit tests and alertmanager.yml; `make system-tools`
    installs promtool and amtool from the Debian packages that ship them."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "deploy-lint", "k8s-validate"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    commands = " ".join(dry_run.stdout.split())
    check = re.search(r"monitoring_manifests\.py validate (.*?)(?: /|$)", commands)
    assert check, commands
    for path in MONITORING.glob("*.yaml"):
        assert str(path.relative_to(REPOSITORY)) in check[1].split()
    for version in KUBERNETES_VERSIONS:
        assert f"--kubernetes-version={version}" in check[1].split()
    for command in (
        "--profile monitoring config --quiet",
        "promtool check config deploy/prometheus/prometheus.yml",
        "promtool test rules deploy/prometheus/rules.test.yml",
        "amtool check-config deploy/prometheus/alertmanager.yml",
    ):
        assert command in commands
    makefile = (REPOSITORY / "mk" / "deploy.mk").read_text(encoding="utf-8")
    tools = re.search(r"^SYSTEM_TOOLS := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert tools
    assert {"promtool:prometheus", "amtool:prometheus-alertmanager"} <= set(tools[1].replace("\\", " ").split())


@pytest.mark.slow  # runs Debian tools (make system-tools)
@pytest.mark.parametrize(("tool", "package"), [("promtool", "prometheus"), ("amtool", "prometheus-alertmanager")])
def test_system_tools_names_the_package_that_ships_each_tool(tool: str, package: str) -> None:
    """Each monitoring tool `make system-tools` probes for comes from the Debian package it installs."""
    owner = subprocess.run(["dpkg", "-S", system_tool(tool)], capture_output=True, text=True, check=False)
    if owner.returncode != 0:  # usrmerge: dpkg knows /usr/bin/x as /bin/x or the reverse
        owner = subprocess.run(["dpkg", "-S", f"bin/{tool}"], capture_output=True, text=True, check=False)
    assert owner.returncode == 0, owner.stderr
    assert f"{package}: " in owner.stdout
