"""What a user of ours can do, tried on the peer: V2 JSON, tritonclient's binary tensors, named features, bad input."""

from __future__ import annotations

import json
import struct
from typing import Any

from benchmarks.client import http_request
from benchmarks.endpoints import single_json, v2_body


def binary_v2_request(row: list[float]) -> tuple[bytes, dict[str, str]]:
    """A V2 request for one row with the binary tensor data extension, as tritonclient sends it by default."""
    header = {
        "inputs": [
            {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "parameters": {"binary_data_size": 32}}
        ],
        "outputs": [{"name": "predict_proba", "parameters": {"binary_data": False}}],
    }
    json_part = json.dumps(header).encode()
    body = json_part + struct.pack(f"<{len(row)}d", *row)
    return body, {"Inference-Header-Content-Length": str(len(json_part))}


def probe_capabilities(url: str, model: str | None, row: list[float]) -> list[dict[str, Any]]:
    """Each probe's name, the status the server at ``url`` answered, and the start of its answer."""
    body, headers = binary_v2_request(row)
    probes = [
        ("V2 infer, JSON tensor FP64 [1, 4]", f"/v2/models/{model}/infer", v2_body(row), {}),
        ("V2 infer, binary tensor data extension (tritonclient's default)", f"/v2/models/{model}/infer", body, headers),
        ("named-feature JSON /predict", "/predict", single_json(row), {}),
        ("V2 infer, input out of range (-1 cm)", f"/v2/models/{model}/infer", v2_body([-1.0, *row[1:]]), {}),
    ]
    results = []
    for name, path, payload, extra in probes:
        try:
            status, answer = http_request(url, path, payload, extra)
        except OSError as error:
            status, answer = 0, str(error).encode()
        results.append({"probe": name, "status": status, "answer": answer[:200].decode("utf-8", "replace")})
    return results
