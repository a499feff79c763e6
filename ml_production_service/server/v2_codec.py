"""The Open Inference Protocol (V2) wire format: JSON tensors and the binary tensor data extension."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM, FloatArray
from ml_production_service.server.errors import ApiError, details_from

BINARY_HEADER = "inference-header-content-length"
INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
OUTPUT_DTYPES: dict[str, tuple[str, np.dtype[Any]]] = {
    "predict": ("INT64", np.dtype("<i8")),
    "predict_proba": ("FP64", np.dtype("<f8")),
}


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """One output the client asks for."""

    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """A V2 inference request (the JSON part)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


def v2_error(status: int, message: str, field: str = "body", rule: str = "v2_protocol") -> ApiError:
    """An error answered as ``{"error": "..."}`` (plus the service's usual keys)."""
    return ApiError(status, "v2_error", message, [{"field": field, "rule": rule, "message": message}])


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """Split a (possibly binary) request into its JSON header and the binary tensor bytes."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise v2_error(
                400, f"Inference-Header-Content-Length {header_length!r} does not fit a body of {len(body)} bytes"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        return InferenceRequest.model_validate_json(body), binary
    except ValidationError as error:
        detail = details_from(error.errors(include_url=False, include_input=False))[0]
        raise v2_error(
            400, f"invalid inference request: {detail['field']}: {detail['message']}", detail["field"]
        ) from None


def input_rows(request: InferenceRequest, binary: bytes, max_rows: int) -> FloatArray:
    """The one ``[N, 4]`` input tensor as float64 rows, every value checked like ``/predict`` checks it."""
    if len(request.inputs) != 1:
        raise v2_error(
            400,
            f"expected exactly one input tensor of shape [N, {len(FEATURE_NAMES)}], got {len(request.inputs)}",
            "inputs",
        )
    tensor = request.inputs[0]
    dtype = INPUT_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise v2_error(400, f"input '{tensor.name}' has datatype {tensor.datatype}; expected FP32 or FP64", "datatype")
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != len(FEATURE_NAMES) or not 1 <= shape[0] <= max_rows:
        raise v2_error(
            400,
            f"input '{tensor.name}' has shape {shape}; expected [N, {len(FEATURE_NAMES)}] with 1 <= N <= {max_rows}",
            "shape",
        )
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        needed = shape[0] * shape[1] * dtype.itemsize
        if size != len(binary) or size != needed:
            message = f"input '{tensor.name}': {size} binary bytes declared, {len(binary)} sent, {needed} needed"
            raise v2_error(400, message, "parameters.binary_data_size")
        values = np.frombuffer(binary, dtype=dtype)
    else:
        values = _json_values(tensor)
    rows = values.astype(np.float64).reshape(shape)
    _check_range(tensor.name, rows)
    return rows


def _json_values(tensor: RequestInput) -> FloatArray:
    try:
        values = np.asarray(tensor.data, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise v2_error(400, f"input '{tensor.name}' data must be numbers", "data", "float_type") from None
    expected = tensor.shape[0] * tensor.shape[1]
    if values.size != expected:
        raise v2_error(
            400, f"input '{tensor.name}' has {values.size} values; shape {tensor.shape} needs {expected}", "data"
        )
    return values


def _check_range(name: str, rows: FloatArray) -> None:
    valid = np.isfinite(rows) & (rows >= MIN_MEASUREMENT_CM) & (rows <= MAX_MEASUREMENT_CM)
    if not valid.all():
        row, column = (int(i) for i in np.argwhere(~valid)[0])
        raise v2_error(
            400,
            f"input '{name}' row {row} {FEATURE_NAMES[column]}={rows[row, column]!r}: "
            f"every value must be finite, >= {MIN_MEASUREMENT_CM:g} and <= {MAX_MEASUREMENT_CM:g}",
            f"inputs[0].data[{row}][{column}]",
            "range",
        )


def requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    """(name, binary?) for each output to return; all of them when the request names none."""
    default_binary = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return [(name, default_binary) for name in OUTPUT_DTYPES]
    wanted = []
    for output in request.outputs:
        if output.name not in OUTPUT_DTYPES:
            raise v2_error(400, f"unknown output '{output.name}'; this model has {list(OUTPUT_DTYPES)}", "outputs")
        wanted.append((output.name, bool((output.parameters or {}).get("binary_data", default_binary))))
    return wanted


def encode_response(
    header: dict[str, Any], tensors: dict[str, np.ndarray], wanted: list[tuple[str, bool]]
) -> tuple[bytes, dict[str, str]]:
    """The response body and extra headers: plain JSON, or JSON header + binary tensors."""
    outputs = []
    chunks = []
    for name, binary in wanted:
        datatype, dtype = OUTPUT_DTYPES[name]
        values = np.ascontiguousarray(tensors[name], dtype=dtype)
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if binary:
            raw = values.tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            output["data"] = values.ravel().tolist()
        outputs.append(output)
    json_part = orjson.dumps({**header, "outputs": outputs})
    if not chunks:
        return json_part, {"content-type": "application/json"}
    return json_part + b"".join(chunks), {
        "content-type": "application/octet-stream",
        BINARY_HEADER: str(len(json_part)),
    }
