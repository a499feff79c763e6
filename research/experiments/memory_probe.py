"""Resident memory a fresh process gains by loading one model and predicting 1000 rows (Linux ``/proc`` only).

Run by ``evaluation.memory`` as ``python -m research.experiments.memory_probe <registry> <model_type>`` in a
subprocess of its own, so nothing else the experiment loaded is counted; prints one JSON line of readings in bytes.
Every library is imported before the first reading, so only the model is counted.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import joblib  # noqa: F401 - imported before the first reading, so its memory is not the model's
import numpy as np
import onnxruntime  # noqa: F401 - as above
import sklearn.ensemble  # noqa: F401 - as above
import sklearn.pipeline  # noqa: F401 - as above
import sklearn.tree  # noqa: F401 - as above
import xgboost  # noqa: F401 - as above

from ml_production_service.configs import ModelType
from ml_production_service.fast_path import OnnxModel
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.registry import load_artifact, model_dir, read_manifest


def rss(status: Path = Path("/proc/self/status")) -> int:
    """This process's resident set size in bytes."""
    with status.open() as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith("VmRSS:"))


def readings(registry: Path, model_type: ModelType) -> dict[str, int]:
    """RSS before loading, after the pipeline, after everything is loaded, and after predicting 1000 rows."""
    rows = np.resize(np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]), (1000, 4))
    gc.collect()
    found = {"before": rss()}
    models: list[Any]
    if not model_type.is_fitted:
        models = [HeuristicPredictor(read_manifest(registry, model_type))]
    else:
        pipeline, manifest = load_artifact(registry, model_type)
        models = [pipeline]
        found["pipeline"] = rss()
        if manifest.fast_path is not None:
            models.append(OnnxModel((model_dir(registry, model_type) / manifest.fast_path.artifact).read_bytes()))
    found["loaded"] = rss()
    for model in models:
        model.predict_proba(rows)
    found["after_predict"] = rss()
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the readings of ``<registry> <model_type>`` as one JSON line."""
    registry, model_type = (argv if argv is not None else sys.argv[1:])[:2]
    print(json.dumps(readings(Path(registry), ModelType(model_type))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
