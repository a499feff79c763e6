"""MLServer as a peer: its own venv under .peers/, a model repository for the registry's artifacts, its spec.

``python -m benchmarks.peers pins`` prints the library pins its venv needs to unpickle our artifacts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from benchmarks import REPOSITORY
from benchmarks.servers import HOST, ServerSpec, free_port
from ml_production_service.configs import ModelType
from ml_production_service.features import engineer_features
from ml_production_service.manifest import installed_library_versions
from ml_production_service.registry import ARTIFACT_FILE, model_dir, read_manifest

MLSERVER_VENV = REPOSITORY / ".peers" / "mlserver"
PIN_LIBRARIES = {"scikit-learn": "scikit-learn", "xgboost": "xgboost-cpu", "numpy": "numpy", "joblib": "joblib"}
"""Library in the manifest -> the distribution to pin in MLServer's venv (xgboost-cpu: no CUDA download)."""


NOTES = [
    "heuristic: not served by MLServer; it has no artifact, and MLServer serves rules only through a custom "
    "MLModel class (Python code of its own), which would no longer be the peer as shipped.",
    "sklearn runtime: serves the registry's joblib Pipeline as is (its first step imports ml_production_service."
    "features, so MLServer runs with PYTHONPATH at this repository); it unpickles without a sha256 check and "
    "does not validate inputs (the -1 cm probe is answered 200).",
    "xgboost runtime: takes a Booster file, not our Pipeline: the harness exports the Pipeline's XGBClassifier to "
    "model.json and the client sends the 8 engineered features instead of the 4 measurements. Left alone it "
    "predicts with an OpenMP thread per core (1-20 ms a row on this busy 2-core machine); it runs with "
    "OMP_NUM_THREADS=1, as our pickles carry n_jobs=1.",
    "MLServer 1.7.1 with uvloop 0.22+ (the newest, which pip picks) cannot start its parallel inference workers "
    "(asyncio.get_event_loop() raises in the worker): its venv pins uvloop<0.22. httptools is installed in its "
    "venv so that its uvicorn parses HTTP with the same parser as ours.",
    "Its REST server does not take the binary tensor data extension (tritonclient's default) and has no "
    "named-feature route; metrics are disabled (metrics_endpoint null), gRPC listens on a free port, idle.",
]
"""What the peer could not do, or needed to do it, as found while wiring it up (shown with the results)."""


def pins() -> list[str]:
    """Requirements that make MLServer's venv unpickle our artifacts exactly as our service does."""
    installed = installed_library_versions()
    return [f"{distribution}=={installed[library]}" for library, distribution in PIN_LIBRARIES.items()]


def mlserver_bin(venv: Path = MLSERVER_VENV) -> Path:
    """The ``mlserver`` command of the peer venv."""
    return venv / "bin" / "mlserver"


def mlserver_versions(venv: Path = MLSERVER_VENV) -> dict[str, str | None]:
    """Versions of what the peer venv serves with (asked from its own interpreter)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "names = ['mlserver', 'mlserver-sklearn', 'mlserver-xgboost', 'fastapi', 'starlette', 'uvicorn', 'uvloop',"
        " 'httptools', 'pydantic', 'scikit-learn', 'xgboost-cpu', 'numpy']\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    completed = subprocess.run(  # noqa: S603
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    versions: dict[str, str | None] = json.loads(completed.stdout)
    return versions


def write_repository(root: Path, model: ModelType, runtime: str, registry_dir: Path, parallel_workers: int) -> Path:
    """An MLServer repository serving one of our artifacts: settings.json plus ``<model>/model-settings.json``.

    ``runtime`` is ``sklearn`` (the joblib Pipeline itself) or ``xgboost`` (the Pipeline's XGBClassifier exported
    as a Booster JSON: it sees the 8 engineered features, so the client must compute them). Returns the file
    MLServer loads.
    """
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(registry_dir, model)
    folder = root / model.value
    folder.mkdir(exist_ok=True)
    artifact = model_dir(registry_dir, model) / (manifest.artifact or ARTIFACT_FILE)
    if runtime == "sklearn":
        uri = artifact
        implementation = "mlserver_sklearn.SKLearnModel"
    else:
        pipeline = joblib.load(artifact)
        uri = folder / "model.json"
        pipeline[-1].save_model(uri)
        implementation = "mlserver_xgboost.XGBoostModel"
    model_settings = {
        "name": model.value,
        "implementation": implementation,
        "parameters": {"uri": str(uri), "version": manifest.version},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    settings = {
        "debug": True,  # MLServer's default: an access log line per request, like our request log line
        "parallel_workers": parallel_workers,
        "metrics_endpoint": None,
        "metrics_dir": str(root / ".metrics"),
        "environments_dir": str(root / ".envs"),
        "load_models_at_startup": True,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    return uri


def mlserver_spec(
    root: Path, model: ModelType, runtime: str, registry_dir: Path, parallel_workers: int, venv: Path = MLSERVER_VENV
) -> ServerSpec:
    """``mlserver start`` on free ports of 127.0.0.1 (HTTP, gRPC, metrics), ready when its model is."""
    write_repository(root, model, runtime, registry_dir, parallel_workers)
    port = free_port()
    env = {
        "MLSERVER_HOST": HOST,
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
        # The artifacts' first step calls ml_production_service.features: MLServer must import it from here.
        "PYTHONPATH": str(REPOSITORY),
    }
    name = "mlserver" if runtime == "sklearn" else "mlserver-xgboost-runtime"
    settings: dict[str, Any] = {"runtime": runtime, "parallel_workers": parallel_workers}
    if runtime == "xgboost":
        # The runtime loads the Booster with n_jobs unset: an OpenMP thread per core for every one-row predict,
        # 1-20 ms on 2 busy cores instead of ~0.2 ms. Our pickles carry n_jobs=1; give it the same.
        env["OMP_NUM_THREADS"] = "1"
        settings["OMP_NUM_THREADS"] = "1"
    return ServerSpec(
        name,
        model.value,
        [str(mlserver_bin(venv)), "start", str(root)],
        port,
        f"/v2/models/{model.value}/ready",
        env,
        settings,
        cwd=root,
    )


def engineered_row(row: list[float]) -> list[float]:
    """The 8 columns the xgboost runtime's Booster expects for one raw row (the Pipeline's first step)."""
    return [float(value) for value in engineer_features(np.asarray([row]))[0]]


if __name__ == "__main__":
    if sys.argv[1:] == ["pins"]:
        sys.stdout.write(" ".join(pins()) + "\n")
    else:
        sys.exit("usage: python -m benchmarks.peers pins")
