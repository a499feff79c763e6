"""The server command on a broken registry: exit 1 and one JSON line naming the problem, no traceback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import joblib
import pytest

from ml_production_service.__main__ import main
from ml_production_service.configs import DEFAULT_REGISTRY_DIR
from tests.functional.server_process import REPOSITORY, SERVER_COMMAND, free_port, server_env

pytestmark = pytest.mark.slow
TREE = "decision_tree"  # the smallest fitted model: its failures start fastest


def _resign(registry: Path, model_type: str, name: str) -> None:
    """Record the current sha256 of ``name`` in the manifest, so that the integrity check passes."""
    manifest_path = registry / model_type / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    digest = hashlib.sha256((registry / model_type / name).read_bytes()).hexdigest()
    if name == manifest["artifact"]:
        manifest["sha256"] = digest
    else:
        assert name == manifest["fast_path"]["artifact"]
        manifest["fast_path"]["sha256"] = digest
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def _manifest_is_a_directory(registry: Path, model_type: str) -> Path:
    path = registry / model_type / "manifest.json"
    path.unlink()
    path.mkdir()
    return path


def _registry_is_a_file(registry: Path, model_type: str) -> Path:
    shutil.rmtree(registry)
    registry.write_text("not a registry\n", encoding="utf-8")
    return registry


def _truncated_joblib(registry: Path, model_type: str) -> Path:
    path = registry / model_type / "model.joblib"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _resign(registry, model_type, path.name)
    return path


def _empty_joblib(registry: Path, model_type: str) -> Path:
    path = registry / model_type / "model.joblib"
    path.write_bytes(b"")
    _resign(registry, model_type, path.name)
    return path


def _garbage_onnx(registry: Path, model_type: str) -> Path:
    path = registry / model_type / "model.onnx"
    path.write_bytes(b"these bytes are not an ONNX protobuf" * 8)
    _resign(registry, model_type, path.name)
    return path


def _joblib_of_a_dict(registry: Path, model_type: str) -> Path:
    path = registry / model_type / "model.joblib"
    joblib.dump({"model": "not a pipeline"}, path)
    _resign(registry, model_type, path.name)
    return path


def _manifest_is_a_list(registry: Path, model_type: str) -> Path:
    path = registry / model_type / "manifest.json"
    path.write_text("[]\n", encoding="utf-8")
    return path


def _manifest_is_a_symlink_loop(registry: Path, model_type: str) -> Path:
    path = registry / model_type / "manifest.json"
    path.unlink()
    path.symlink_to(path)
    return path


@dataclass(frozen=True)
class Breakage:
    """One way to break a copy of registry/prd, the model type it shows on, and what the message must say."""

    breaks: Callable[[Path, str], Path]
    """Breaks the registry; returns the path the message must name."""
    model_type: str
    problem: str


CASES = {
    "manifest-is-a-directory": Breakage(_manifest_is_a_directory, TREE, "is a directory, not a regular file"),
    "heuristic-manifest-is-a-directory": Breakage(
        _manifest_is_a_directory, "heuristic", "is a directory, not a regular file"
    ),
    "registry-is-a-file": Breakage(_registry_is_a_file, TREE, "is not a directory: point MPS_REGISTRY_DIR"),
    "truncated-joblib": Breakage(_truncated_joblib, TREE, "cannot be unpickled"),
    "empty-joblib": Breakage(_empty_joblib, TREE, "cannot be unpickled (EOFError)"),
    "garbage-onnx": Breakage(_garbage_onnx, TREE, "cannot serve: ONNX Runtime cannot load it"),
    "joblib-of-a-dict": Breakage(_joblib_of_a_dict, TREE, "holds a dict, not a scikit-learn Pipeline"),
    "manifest-is-a-list": Breakage(_manifest_is_a_list, TREE, "is invalid: Input should be an object"),
    "manifest-is-a-symlink-loop": Breakage(_manifest_is_a_symlink_loop, TREE, "Too many levels of symbolic links"),
}


COMMAND_CASES = ("garbage-onnx", "heuristic-manifest-is-a-directory")
"""Run as the real command: a failure found by the check process, and one found in place (the heuristic). The
others go through ``main()`` in this process, which starts the same check process."""


def _broken(case: Breakage, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A broken copy of registry/prd and the server's environment for it: the broken path and the settings."""
    registry = tmp_path / "registry"
    shutil.copytree(DEFAULT_REGISTRY_DIR, registry)
    broken = case.breaks(registry, case.model_type)
    settings = {
        "MPS_REGISTRY_DIR": str(registry),
        "MPS_MODEL_TYPE": case.model_type,
        "MPS_LOG_FORMAT": "json",
        "MPS_WORKERS": "1",
        "MPS_API_HOST": "127.0.0.1",
        "MPS_API_PORT": str(free_port()),
    }
    return broken, settings


def _assert_one_startup_failed_line(case: Breakage, broken: Path, code: int, output: str) -> None:
    assert "Traceback" not in output, output
    assert code == 1, output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert lines[0].strip()
    record = json.loads(lines[0])
    assert record["event"] == "startup_failed"
    assert record["level"] == "error"
    assert record["model_type"] == case.model_type
    assert str(broken) in record["error"]
    assert case.problem in record["error"]


@pytest.mark.parametrize("name", COMMAND_CASES)
def test_broken_registry_stops_the_server_command_with_one_json_line(name: str, tmp_path: Path) -> None:
    """python -m ml_production_service exits 1 and prints only a startup_failed line naming what is broken."""
    case = CASES[name]
    broken, settings = _broken(case, tmp_path)
    result = subprocess.run(
        SERVER_COMMAND,
        cwd=REPOSITORY,
        env=server_env(**settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _assert_one_startup_failed_line(case, broken, result.returncode, result.stdout + result.stderr)


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=name) for name, case in CASES.items() if name not in COMMAND_CASES]
)
def test_broken_registry_stops_start_up_with_one_json_line(
    case: Breakage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """main() returns 1 and its process (the check process's output included) prints only a startup_failed line."""
    broken, settings = _broken(case, tmp_path)
    for name in [name for name in os.environ if name.startswith("MPS_")]:
        monkeypatch.delenv(name)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    code = main()
    captured = capfd.readouterr()
    _assert_one_startup_failed_line(case, broken, code, captured.out + captured.err)
