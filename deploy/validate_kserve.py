"""Validate KServe InferenceService manifests against k8s/kserve/inferenceservice.schema.json (make k8s-validate).

kubernetes-validate knows no CRD: on an InferenceService it only warns that it has no schema. This checks
the manifest against the project's schema, whose pod, container and volume parts are kubernetes-validate's
own Kubernetes definitions (strict: unknown fields are errors), for each Kubernetes version asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from kubernetes_validate.utils import latest_version
from referencing import Registry, Resource

SCHEMA = Path(__file__).resolve().parents[1] / "k8s" / "kserve" / "inferenceservice.schema.json"
DEFINITIONS = {"strict": "-local-strict", "lax": "-local"}


def validator(kubernetes_version: str) -> Draft202012Validator:
    """The schema's validator, its Kubernetes references resolved for ``kubernetes_version`` (e.g. 1.37.0)."""
    registry: Registry[Any] = Registry()
    schemas = files("kubernetes_validate") / "kubernetes-json-schema"
    for name, suffix in DEFINITIONS.items():
        definitions = json.loads((schemas / f"v{kubernetes_version}{suffix}" / "_definitions.json").read_text())
        uri = f"https://kubernetes.io/api/{name}/_definitions.json"
        definitions["$id"] = uri  # both files share one $id; give each its own so both can be referenced
        registry = registry.with_resource(uri, Resource.from_contents(definitions))
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


def errors(manifest: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Every schema violation in ``manifest``, as ``path: message`` lines (empty when it is valid)."""
    found = validator(kubernetes_version).iter_errors(manifest)
    return sorted(f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}" for error in found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("-k", "--kubernetes-version", action="append", help=f"default: {latest_version()}")
    args = parser.parse_args()
    status = 0
    for path in args.files:
        for document in (d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d):
            name = f"{str(document.get('kind', '?')).lower()}/{document.get('metadata', {}).get('name', '?')}"
            for version in args.kubernetes_version or [latest_version()]:
                problems = errors(document, version)
                for problem in problems:
                    sys.stdout.write(f"ERROR {path} {name} against {version}: {problem}\n")
                if not problems:
                    sys.stdout.write(f"INFO {path} passed for resource {name} against version {version}\n")
                status |= bool(problems)
    return status


if __name__ == "__main__":
    sys.exit(main())
