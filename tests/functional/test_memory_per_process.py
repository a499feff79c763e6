"""Which process holds what: the master of two workers holds no model library; a worker holds only its fast path."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.functional.server_process import RunningServer, running_server

pytestmark = pytest.mark.slow
LIBRARIES = ("sklearn", "scipy", "xgboost", "onnxruntime")
"""The model libraries with compiled parts, which show in ``/proc/<pid>/maps`` once imported (joblib is pure Python:
``tests/unit/test_preflight.py`` checks the server command's modules in a clean interpreter)."""
ROW = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}


def mapped_libraries(pid: int) -> set[str]:
    """The model libraries whose files (compiled modules, shared objects) the process has mapped: what it imported."""
    paths = {line.split(maxsplit=5)[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()}
    return {name for name in LIBRARIES for path in paths if f"/{name}/" in path or f"/{name}.libs/" in path}


def children(pid: int) -> list[int]:
    """The process's children (its workers and multiprocessing's resource tracker)."""
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def workers(pid: int) -> list[int]:
    """The children that are uvicorn workers (not the resource tracker)."""
    return [child for child in children(pid) if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]


def _wait_for_models(server: RunningServer, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.log.seek(0)
        if server.log.read().count('"model_loaded"') >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {count} workers logged model_loaded within {timeout} s")


def _explain(url: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/predict?explain=true", data=json.dumps(ROW).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our server on 127.0.0.1
        answer: dict[str, object] = json.loads(response.read())
    return answer


def test_the_master_of_two_workers_holds_no_model_library_and_the_workers_only_onnx_runtime() -> None:
    """With two forest workers the master maps none of scikit-learn, SciPy, XGBoost or ONNX Runtime; each
    worker maps ONNX Runtime (the fast path it serves) and no scikit-learn until an explanation needs the Pipeline."""
    with running_server(MPS_MODEL_TYPE="random_forest", MPS_WORKERS="2") as server:
        _wait_for_models(server, 2)
        master = server.process.pid
        serving = workers(master)
        assert len(serving) == 2
        assert mapped_libraries(master) == set()
        assert [mapped_libraries(worker) for worker in serving] == [{"onnxruntime"}, {"onnxruntime"}]
        explanation = _explain(server.url)["explanation"]
        assert isinstance(explanation, dict) and explanation["method"] == "tree_path"
        assert any("sklearn" in mapped_libraries(worker) for worker in serving)  # the one that explained
        assert mapped_libraries(master) == set()
