"""The model check of ``python -m ml_production_service``, in its own process: what it answers, how it fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ml_production_service.__main__ import check_model
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, REPOSITORY_ROOT, ModelType, ServiceConfig
from ml_production_service.factory import proof
from ml_production_service.preflight import ModelCheckFailed
from ml_production_service.registry import read_manifest

LIBRARIES = ("sklearn", "xgboost", "onnxruntime", "joblib", "scipy", "skl2onnx")


@pytest.mark.slow
def test_a_failed_check_is_its_one_line_reason(tiny_registry: Path) -> None:
    """A fast path that disagrees with its manifest fails in the child; the parent gets the check's one line."""
    onnx = tiny_registry / "decision_tree" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1])
    config = ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry, workers=2)
    with pytest.raises(ModelCheckFailed, match=r"integrity check failed for .*model\.onnx") as failed:
        check_model(config)
    assert "\n" not in str(failed.value)


def test_a_check_process_that_dies_before_answering_is_a_failure(tiny_registry: Path) -> None:
    """No answer (the check process crashed) refuses to start too, naming its exit code."""
    config = ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry)
    with pytest.raises(ModelCheckFailed, match="exited with code 3 before answering"):
        check_model(config, command=[sys.executable, "-c", "import sys; sys.exit(3)"])


@pytest.mark.slow
def test_the_server_commands_checks_leave_the_models_libraries_out_of_its_process() -> None:
    """In a clean interpreter, ``check_model`` of the promoted registry imports none of the model's libraries into
    the server command's process: the heuristic with one worker (checked in place), with two, the forest with two
    (the master: proven in a child); the forest with one worker (this process will serve it) imports ONNX Runtime
    alone, while the child proves it. Only the fitted model's check hands on a proof."""
    script = (
        "import json, sys\n"
        "from ml_production_service.__main__ import check_model\n"
        "from ml_production_service.configs import ModelType, ServiceConfig\n"
        "answers = []\n"
        "for model, workers in (('heuristic', 1), ('heuristic', 2), ('random_forest', 2), ('random_forest', 1)):\n"
        "    proven = check_model(ServiceConfig(model_type=ModelType(model), workers=workers))\n"
        f"    answers.append([proven, sorted({{m.split('.')[0] for m in sys.modules}} & set({LIBRARIES!r}))])\n"
        "print(json.dumps(answers))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    forest = proof(read_manifest(DEFAULT_REGISTRY_DIR, ModelType.RANDOM_FOREST))
    assert json.loads(result.stdout.splitlines()[-1]) == [
        [None, []],
        [None, []],
        [forest, []],
        [forest, ["onnxruntime"]],
    ]
