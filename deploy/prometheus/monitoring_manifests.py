"""Check k8s/monitoring/ on its schemas and against rules.yml (make k8s-validate); write its PrometheusRule.

kubernetes-validate knows no prometheus-operator CRD (on a PrometheusRule or ServiceMonitor it only warns), so
``validate`` checks each against k8s/monitoring/schemas/<kind>.schema.json, whose metadata, label selector and
Secret key selector are kubernetes-validate's own strict Kubernetes definitions, for each Kubernetes version
asked (as deploy/validate_kserve.py does for KServe), and that a PrometheusRule carries exactly the rule groups
of deploy/prometheus/rules.yml. ``write`` rewrites k8s/monitoring/prometheusrule.yaml under its ``spec:`` line
from rules.yml (comments included), keeping the header and metadata above it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from kubernetes_validate.utils import latest_version
from referencing import Registry, Resource

REPOSITORY = Path(__file__).resolve().parents[2]
RULES = REPOSITORY / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS_RULE = REPOSITORY / "k8s" / "monitoring" / "prometheusrule.yaml"
SCHEMAS = REPOSITORY / "k8s" / "monitoring" / "schemas"
KINDS = {"PrometheusRule": "prometheusrule", "ServiceMonitor": "servicemonitor"}
"""The kinds this checks, and their schema's file name (without .schema.json)."""
STRICT_DEFINITIONS = "https://kubernetes.io/api/strict/_definitions.json"
SPEC_LINE = "spec:\n"


def kubernetes_registry(kubernetes_version: str) -> Registry[Any]:
    """kubernetes-validate's strict definitions for ``kubernetes_version`` (e.g. 1.37.0), where the schemas
    reference them."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{kubernetes_version}-local-strict"
    definitions = {**json.loads((folder / "_definitions.json").read_text()), "$id": STRICT_DEFINITIONS}
    registry: Registry[Any] = Registry().with_resource(STRICT_DEFINITIONS, Resource.from_contents(definitions))
    return registry


def schema_errors(manifest: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Every violation of its kind's schema in ``manifest``, as ``path: message`` lines (empty when valid)."""
    name = KINDS.get(manifest.get("kind", ""))
    if name is None:
        return [f"<root>: kind {manifest.get('kind')!r} is not one of {sorted(KINDS)}"]
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    found = Draft202012Validator(schema, registry=kubernetes_registry(kubernetes_version)).iter_errors(manifest)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found)


def rules_errors(manifest: dict[str, Any]) -> list[str]:
    """A PrometheusRule whose groups are not rules.yml's, as one line (empty when they are, or another kind)."""
    if manifest.get("kind") != "PrometheusRule":
        return []
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    if manifest.get("spec", {}).get("groups") == rules:
        return []
    return [f"spec.groups: not the groups of {RULES.relative_to(REPOSITORY)}: run `python {_self()} write`"]


def render_prometheus_rule(manifest_text: str, rules_text: str) -> str:
    """``manifest_text`` up to its ``spec:`` line, then rules.yml from its ``groups:`` line, indented under it."""
    head, spec, _ = manifest_text.partition(SPEC_LINE)
    if not spec:
        raise ValueError(f"{PROMETHEUS_RULE.name} has no top-level `spec:` line to write the rules under")
    _, groups, body = rules_text.partition("\ngroups:\n")
    if not groups:
        raise ValueError(f"{RULES.name} has no top-level `groups:` line")
    lines = ("groups:\n" + body).splitlines(keepends=True)
    return head + spec + "".join(f"  {line}" if line.strip() else line for line in lines)


def _self() -> str:
    return str(Path(__file__).resolve().relative_to(REPOSITORY))


def validate(paths: list[Path], versions: list[str]) -> int:
    """Print one line per resource and version (INFO when it passed, ERROR per problem); 1 if any failed."""
    failed = False
    for path in paths:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        for document, version in itertools.product(documents, versions):
            name = f"{str(document.get('kind', '?')).lower()}/{document.get('metadata', {}).get('name', '?')}"
            problems = schema_errors(document, version) + rules_errors(document)
            where = f"{path} {name} against {version}"
            lines = [f"ERROR {where}: {problem}" for problem in problems]
            sys.stdout.write("\n".join(lines or [f"INFO {path} passed for resource {name} against version {version}"]))
            sys.stdout.write("\n")
            failed = failed or bool(problems)
    return int(failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check manifests on their schemas and against rules.yml")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("-k", "--kubernetes-version", action="append", help=f"default: {latest_version()}")
    commands.add_parser("write", help=f"rewrite {PROMETHEUS_RULE.relative_to(REPOSITORY)} from rules.yml")
    args = parser.parse_args()
    if args.command == "validate":
        return validate(args.files, args.kubernetes_version or [latest_version()])
    text = render_prometheus_rule(PROMETHEUS_RULE.read_text(encoding="utf-8"), RULES.read_text(encoding="utf-8"))
    PROMETHEUS_RULE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
