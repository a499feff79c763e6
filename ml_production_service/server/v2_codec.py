"""The Open Inference Protocol (V2) wire format: JSON tensors and the binary tensor data extension.

As strict as ``/predict``: measurements are JSON numbers (no strings, no booleans), in range; shapes are integers;
counts are checked before any per-value work; unknown keys are refused; at most two outputs are answered.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, NoReturn

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM, FloatArray
from ml_production_service.server.body import is_json, unsupported_media_type
from ml_production_service.server.errors import ApiError, details_from, echo

BINARY_HEADER = "inference-header-content-length"
BINARY_MEDIA_TYPE = "application/octet-stream"
INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
OUTPUT_DTYPES: dict[str, tuple[str, np.dtype[Any]]] = {
    "predict": ("INT64", np.dtype("<i8")),
    "predict_proba": ("FP64", np.dtype("<f8")),
}
MAX_NAME_CHARS = 256
"""Longest request id, tensor name or datatype accepted (the id is echoed back)."""
MAX_INPUTS = 16
_HEADER_LENGTH = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() accepts '²'

Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    shape: Annotated[list[StrictInt], Field(max_length=8)]
    datatype: Name
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """One output the client asks for."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """A V2 inference request (the JSON part)."""

    model_config = ConfigDict(extra="forbid")

    id: Name | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[RequestInput], Field(max_length=MAX_INPUTS)]
    outputs: Annotated[list[RequestOutput], Field(max_length=len(OUTPUT_DTYPES))] | None = None


def v2_error(status: int, message: str, field: str = "body", rule: str = "v2_protocol") -> ApiError:
    """An error answered as ``{"error": "..."}`` (plus the service's usual keys)."""
    return ApiError(status, "v2_error", message, [{"field": field, "rule": rule, "message": message}])


def check_content_type(content_type: str, binary: bool) -> None:
    """JSON, or none (tritonclient sends none); ``application/octet-stream`` too with the binary extension."""
    if not content_type or is_json(content_type):
        return
    if binary and content_type.partition(";")[0].strip().lower() == BINARY_MEDIA_TYPE:
        return
    expected = "application/json" + (f" or {BINARY_MEDIA_TYPE}" if binary else "")
    raise unsupported_media_type(content_type, expected)


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """Split a (possibly binary) request into its JSON header and the binary tensor bytes."""
    binary = b""
    if header_length is not None:
        if not _HEADER_LENGTH.fullmatch(header_length) or int(header_length) > len(body):
            raise v2_error(
                400,
                f"Inference-Header-Content-Length {echo(header_length)} does not fit a body of {len(body)} bytes",
                "inference-header-content-length",
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    if not body.strip():
        raise v2_error(400, "request body is empty: send a JSON inference request", "body", "required")
    try:
        return InferenceRequest.model_validate_json(body), binary
    except ValidationError as error:
        detail = details_from(error.errors(include_url=False, include_input=False))[0]
        raise v2_error(
            400, f"invalid inference request: {detail['field']}: {detail['message']}", detail["field"], detail["rule"]
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
    name = echo(tensor.name)
    dtype = INPUT_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise v2_error(400, f"input '{name}' has datatype {echo(tensor.datatype)}; expected FP32 or FP64", "datatype")
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != len(FEATURE_NAMES) or not 1 <= shape[0] <= max_rows:
        raise v2_error(
            400,
            f"input '{name}' has shape {shape}; expected [N, {len(FEATURE_NAMES)}] with 1 <= N <= {max_rows}",
            "shape",
        )
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        needed = shape[0] * shape[1] * dtype.itemsize
        if type(size) is not int or size != len(binary) or size != needed:
            message = f"input '{name}': {echo(size)} binary bytes declared, {len(binary)} sent, {needed} needed"
            raise v2_error(400, message, "parameters.binary_data_size")
        values = np.frombuffer(binary, dtype=dtype)
    elif binary:
        raise v2_error(400, f"{len(binary)} binary bytes sent but no input declares binary_data_size", "body")
    else:
        values = _json_values(tensor, shape[0], shape[1], dtype)
    _check_range(name, values.reshape(shape), dtype)
    return values.astype(np.float64).reshape(shape)


def _json_values(tensor: RequestInput, rows: int, columns: int, dtype: np.dtype[Any]) -> np.ndarray:
    """Flat (``[a, b, ...]``) or nested (``[[a, b, c, d], ...]``) numbers; counts first, then each value."""
    data = tensor.data
    name = echo(tensor.name)
    if isinstance(data, list) and len(data) == rows and all(type(r) is list and len(r) == columns for r in data):
        flat = [value for row in data for value in row]
    elif isinstance(data, list) and len(data) == rows * columns:
        flat = data
    else:
        raise v2_error(
            400,
            f"input '{name}' data must be {rows * columns} numbers, flat or as {rows} rows of {columns}",
            "data",
        )
    for index, value in enumerate(flat):
        if type(value) is not float and type(value) is not int:  # bool is an int subclass: refuse it too
            raise v2_error(
                400,
                f"input '{name}' value {index} is {echo(repr(value))}: every value must be a JSON number",
                f"inputs[0].data[{index}]",
                "float_type",
            )
    try:
        if dtype == np.float64:  # Python numbers fit float64 or raise: no overflow state to set up (it costs µs)
            return np.array(flat, dtype=dtype)
        with np.errstate(over="ignore"):  # a number past float32's range becomes inf: the range check refuses it
            return np.array(flat, dtype=dtype)
    except OverflowError:  # an integer too large for a float
        raise v2_error(400, f"input '{name}' holds a number too large", "data", "range") from None


SMALL_TENSOR = 64
"""Values up to which the range check runs over plain floats rather than numpy arrays."""


def _check_range(name: str, rows: np.ndarray, dtype: np.dtype[Any]) -> None:
    # In the tensor's own precision: float32(0.01) is a hair under 0.01 and must still be accepted.
    low, high = dtype.type(MIN_MEASUREMENT_CM), dtype.type(MAX_MEASUREMENT_CM)
    if rows.size <= SMALL_TENSOR:  # a few rows: plain floats compare faster than numpy sets up (same precision)
        low_value, high_value = float(low), float(high)
        columns = rows.shape[1]
        for index, value in enumerate(rows.ravel().tolist()):
            if not low_value <= value <= high_value:  # NaN fails both, infinities one (the bounds are finite)
                _out_of_range(name, rows, *divmod(index, columns))
        return
    with np.errstate(invalid="ignore", over="ignore"):
        valid = np.isfinite(rows) & (rows >= low) & (rows <= high)
    if not valid.all():
        _out_of_range(name, rows, *(int(i) for i in np.argwhere(~valid)[0]))


def _out_of_range(name: str, rows: np.ndarray, row: int, column: int) -> NoReturn:
    raise v2_error(
        400,
        f"input '{name}' row {row} {FEATURE_NAMES[column]}={float(rows[row, column])!r}: "
        f"every value must be finite, >= {MIN_MEASUREMENT_CM:g} and <= {MAX_MEASUREMENT_CM:g}",
        f"inputs[0].data[{row}][{column}]",
        "range",
    )


def _flag(parameters: dict[str, Any] | None, key: str, default: bool, field: str) -> bool:
    value = (parameters or {}).get(key, default)
    if type(value) is not bool:
        raise v2_error(400, f"{field}.{key} must be true or false, got {echo(value)}", f"{field}.{key}", "bool_type")
    return value


def requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    """(name, binary?) for each output to return; all of them when the request names none."""
    default_binary = _flag(request.parameters, "binary_data_output", False, "parameters")
    if not request.outputs:
        return [(name, default_binary) for name in OUTPUT_DTYPES]
    wanted: list[tuple[str, bool]] = []
    for index, output in enumerate(request.outputs):
        if output.name not in OUTPUT_DTYPES:
            raise v2_error(
                400, f"unknown output '{echo(output.name)}'; this model has {list(OUTPUT_DTYPES)}", "outputs"
            )
        binary = _flag(output.parameters, "binary_data", default_binary, f"outputs[{index}].parameters")
        wanted.append((output.name, binary))
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
        "content-type": BINARY_MEDIA_TYPE,
        BINARY_HEADER: str(len(json_part)),
    }
