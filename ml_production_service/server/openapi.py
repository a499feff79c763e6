"""What the OpenAPI schema says beyond what FastAPI infers: every error status, the V2 request body, the served
model's name and version as the only valid path values. schemathesis holds the service to all of it."""

from __future__ import annotations

from typing import Any

from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM
from ml_production_service.server.errors import JSON
from ml_production_service.server.schemas import ErrorResponse
from ml_production_service.server.v2_codec import BINARY_MEDIA_TYPE, INPUT_DTYPES, MAX_NAME_CHARS, OUTPUT_DTYPES

ErrorStatuses = dict[int | str, dict[str, Any]]


def errors(*statuses: int) -> ErrorStatuses:
    """``responses=`` entries answering ``statuses`` in the one error shape."""
    return {status: {"model": ErrorResponse} for status in statuses}


# Any route: no or a wrong API key (when keys are on), a body over the limit or too slow, another method, a bad
# query (FastAPI's 422, in our shape).
ANY_ROUTE = errors(401, 405, 408, 413, 422)
# Prediction routes: a bad body, a client over its rate limit, a model call past its deadline.
BODY_ROUTE = errors(400, 415, 429, 504)
MODEL_ROUTE = errors(503)

V2_DOCUMENTED_ROWS = (1, 2)
"""Row counts the documented V2 body spells out: JSON Schema cannot say "len(data) == 4 * shape[0]"."""


def _tensor(rows: int) -> dict[str, Any]:
    columns = len(FEATURE_NAMES)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "maxLength": MAX_NAME_CHARS},
            "shape": {"const": [rows, columns]},
            "datatype": {"enum": list(INPUT_DTYPES)},
            "data": {
                "type": "array",
                "minItems": rows * columns,
                "maxItems": rows * columns,
                "items": {"type": "number", "minimum": MIN_MEASUREMENT_CM, "maximum": MAX_MEASUREMENT_CM},
            },
        },
    }


INFERENCE_REQUEST: dict[str, Any] = {
    "title": "InferenceRequest",
    "description": (
        "A V2 inference request: one FP32/FP64 tensor [N, 4] (N up to MPS_MAX_BATCH_SIZE; the schema spells out "
        "N = 1 and 2), its values flat or as rows. The binary tensor extension (Inference-Header-Content-Length, "
        "parameters.binary_data_size) is accepted too."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["inputs"],
    "properties": {
        "id": {"anyOf": [{"type": "string", "maxLength": MAX_NAME_CHARS}, {"type": "null"}]},
        "parameters": {
            "anyOf": [{"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}}, {"type": "null"}]
        },
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {"oneOf": [_tensor(rows) for rows in V2_DOCUMENTED_ROWS]},
        },
        "outputs": {
            "anyOf": [
                {
                    "type": "array",
                    "maxItems": len(OUTPUT_DTYPES),
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"enum": list(OUTPUT_DTYPES)},
                            "parameters": {
                                "anyOf": [
                                    {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                                    {"type": "null"},
                                ]
                            },
                        },
                    },
                },
                {"type": "null"},
            ]
        },
    },
    "examples": [
        {"id": "r1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
    ],
}

INFER_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}}}
}
INFER_ANSWER: dict[str, Any] = {
    "description": "The outputs asked for: JSON, or with the binary extension a JSON header and raw tensors.",
    "content": {JSON: {"schema": {"type": "object"}}, BINARY_MEDIA_TYPE: {"schema": {"type": "string"}}},
}


def pin_path_values(schema: dict[str, Any], model_type: str, version: str) -> None:
    """The V2 ``{name}`` and ``{version}`` path parameters take the one served value (others answer 404)."""
    values = {"name": model_type, "version": version}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") in values:
                    parameter["schema"] = {"type": "string", "enum": [values[parameter["name"]]]}
