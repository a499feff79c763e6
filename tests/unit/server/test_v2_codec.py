"""The V2 wire format: JSON and binary tensors in, checked like /predict; outputs as asked, JSON or binary."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM
from ml_production_service.server.errors import ApiError
from ml_production_service.server.v2_codec import (
    BINARY_HEADER,
    BINARY_MEDIA_TYPE,
    MAX_INPUTS,
    MAX_NAME_CHARS,
    OUTPUT_DTYPES,
    SMALL_TENSOR,
    InferenceRequest,
    check_content_type,
    encode_response,
    input_rows,
    parse_request,
    requested_outputs,
    v2_error,
)

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]
MAX_ROWS = 10


def _tensor(data: Any = None, shape: list[Any] | None = None, datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "shape": [2, 4] if shape is None else shape,
        "datatype": datatype,
        "data": ROWS if data is None else data,
        **extra,
    }


def _request(*inputs: dict[str, Any], **fields: Any) -> InferenceRequest:
    return InferenceRequest.model_validate({"inputs": list(inputs) or [_tensor()], **fields})


def _v2_refusal(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    error = caught.value
    assert (error.status, error.code) == (400, "v2_error")
    assert error.details[0]["message"] == error.message
    return error


def _rows(request: InferenceRequest, binary: bytes = b"", max_rows: int = MAX_ROWS) -> np.ndarray:
    return input_rows(request, binary, max_rows)


def _rows_refusal(request: InferenceRequest, binary: bytes = b"", max_rows: int = MAX_ROWS) -> ApiError:
    return _v2_refusal(input_rows, request, binary, max_rows)


# v2_error and check_content_type


def test_v2_error_is_the_service_shape_with_one_detail() -> None:
    """A V2 error carries its status, the ``v2_error`` code and one detail naming the field and rule."""
    error = v2_error(404, "no such model", "name", "lookup")
    assert (error.status, error.code, error.message) == (404, "v2_error", "no such model")
    assert error.details == [{"field": "name", "rule": "lookup", "message": "no such model"}]
    assert v2_error(400, "m").details == [{"field": "body", "rule": "v2_protocol", "message": "m"}]


@pytest.mark.parametrize(
    ("content_type", "binary"),
    [
        pytest.param("", False, id="none-json"),
        pytest.param("", True, id="none-binary"),
        pytest.param("application/json", False, id="json"),
        pytest.param("application/json; charset=utf-8", True, id="json-with-binary"),
        pytest.param("application/octet-stream", True, id="octet-stream-with-binary"),
        pytest.param("Application/Octet-Stream; x=1", True, id="octet-stream-any-case-with-parameters"),
    ],
)
def test_accepted_content_types(content_type: str, binary: bool) -> None:
    """JSON or none (tritonclient sends none); octet-stream only with the binary extension."""
    check_content_type(content_type, binary)  # raises ApiError (415) for a refused type


@pytest.mark.parametrize(
    ("content_type", "binary", "expected"),
    [
        pytest.param("application/octet-stream", False, "application/json", id="octet-stream-without-binary"),
        pytest.param("text/plain", False, "application/json", id="text-json"),
        pytest.param("text/plain", True, "application/json or application/octet-stream", id="text-binary"),
    ],
)
def test_refused_content_types_are_415_naming_what_is_expected(content_type: str, binary: bool, expected: str) -> None:
    """Another type is 415, and the message says which types the request could have used."""
    with pytest.raises(ApiError) as caught:
        check_content_type(content_type, binary)
    assert (caught.value.status, caught.value.code) == (415, "unsupported_media_type")
    assert caught.value.message == f"Content-Type must be {expected}, got {content_type}"


# parse_request


def test_a_json_request_parses_whole_with_no_binary_part() -> None:
    """Without the header the whole body is the JSON request."""
    body = json.dumps({"id": "r1", "inputs": [_tensor()]}).encode()
    request, binary = parse_request(body, None)
    assert request.id == "r1"
    assert request.inputs[0].shape == [2, 4]
    assert binary == b""


def test_the_header_length_splits_json_from_binary() -> None:
    """Inference-Header-Content-Length bytes are JSON; every byte after it is tensor data."""
    header = json.dumps({"inputs": [_tensor(data=None, parameters={"binary_data_size": 64})]}).encode()
    tail = np.asarray(ROWS, dtype="<f8").tobytes()
    request, binary = parse_request(header + tail, str(len(header)))
    assert binary == tail
    assert request.inputs[0].parameters == {"binary_data_size": 64}
    # A header length equal to the body is a binary request with no binary part.
    assert parse_request(header, str(len(header)))[1] == b""


@pytest.mark.parametrize(
    "header_length",
    [
        pytest.param("abc", id="letters"),
        pytest.param("-1", id="negative"),
        pytest.param("+5", id="sign"),
        pytest.param("", id="empty"),
        pytest.param(" 10", id="space"),
        pytest.param("1.5", id="decimal"),
        pytest.param("\u00b2", id="superscript-digit"),
        pytest.param("\u0661\u0662", id="arabic-indic-digits"),
        pytest.param("12345678901", id="eleven-digits"),
        pytest.param("1000", id="longer-than-the-body"),
    ],
)
def test_a_header_length_that_is_not_a_fitting_number_is_400(header_length: str) -> None:
    """Only ASCII digits (at most 10) not past the body's end; the detail names the header."""
    body = json.dumps({"inputs": [_tensor()]}).encode()
    error = _v2_refusal(parse_request, body, header_length)
    assert error.details[0]["field"] == BINARY_HEADER
    assert f"does not fit a body of {len(body)} bytes" in error.message


def test_a_huge_header_length_is_echoed_cut() -> None:
    """A client-sent header value appears in the answer cut to the echo limit."""
    error = _v2_refusal(parse_request, b"{}", "9" * 5000)
    assert "9" * 81 not in error.message


@pytest.mark.parametrize(("body", "header_length"), [(b"", None), (b" \n ", None), (b'{"inputs": []}', "0")])
def test_an_empty_json_part_is_400_required(body: bytes, header_length: str | None) -> None:
    """No JSON (a blank body, or a header length of 0) is its own error."""
    error = _v2_refusal(parse_request, body, header_length)
    assert (error.details[0]["field"], error.details[0]["rule"]) == ("body", "required")


@pytest.mark.parametrize(
    ("payload", "field", "rule"),
    [
        pytest.param(b'{"inputs": [', "body", "json_invalid", id="broken-json"),
        pytest.param(b"[]", "body", "model_type", id="not-an-object"),
        pytest.param(b"{}", "inputs", "missing", id="no-inputs"),
        pytest.param({"inputs": [_tensor()], "extra": 1}, "extra", "extra_forbidden", id="unknown-key"),
        pytest.param(
            {"inputs": [_tensor(colour="red")]}, "inputs[0].colour", "extra_forbidden", id="unknown-input-key"
        ),
        pytest.param({"inputs": [_tensor(shape=[2.0, 4])]}, "inputs[0].shape[0]", "int_type", id="float-shape"),
        pytest.param({"inputs": [_tensor(shape=["2", 4])]}, "inputs[0].shape[0]", "int_type", id="string-shape"),
        pytest.param({"inputs": [_tensor(shape=[True, 4])]}, "inputs[0].shape[0]", "int_type", id="bool-shape"),
        pytest.param({"inputs": [_tensor(shape=[1] * 9)]}, "inputs[0].shape", "too_long", id="nine-dimensions"),
        pytest.param({"id": "i" * (MAX_NAME_CHARS + 1), "inputs": [_tensor()]}, "id", "string_too_long", id="long-id"),
        pytest.param({"id": 7, "inputs": [_tensor()]}, "id", "string_type", id="number-id"),
        pytest.param(
            {"inputs": [{**_tensor(), "name": "n" * (MAX_NAME_CHARS + 1)}]},
            "inputs[0].name",
            "string_too_long",
            id="long-name",
        ),
        pytest.param({"inputs": [_tensor()] * (MAX_INPUTS + 1)}, "inputs", "too_long", id="too-many-inputs"),
        pytest.param(
            {"inputs": [_tensor()], "outputs": [{"name": "predict"}] * 3}, "outputs", "too_long", id="three-outputs"
        ),
        pytest.param(
            {"inputs": [_tensor()], "outputs": [{"name": "predict", "binary": True}]},
            "outputs[0].binary",
            "extra_forbidden",
            id="unknown-output-key",
        ),
    ],
)
def test_a_request_breaking_the_protocol_is_400_naming_the_first_problem(
    payload: bytes | dict[str, Any], field: str, rule: str
) -> None:
    """Each refusal names the field and rule of the first error, in one line."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    error = _v2_refusal(parse_request, body, None)
    assert (error.details[0]["field"], error.details[0]["rule"]) == (field, rule)
    assert error.message.startswith(f"invalid inference request: {field}: ")
    assert len(error.details) == 1


def test_limits_are_inclusive() -> None:
    """An id and names of exactly MAX_NAME_CHARS, MAX_INPUTS inputs and both outputs parse."""
    name = "n" * MAX_NAME_CHARS
    payload = {
        "id": name,
        "inputs": [{**_tensor(), "name": name}] * MAX_INPUTS,
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    request, _ = parse_request(json.dumps(payload).encode(), None)
    assert request.id == name
    assert len(request.inputs) == MAX_INPUTS


# input_rows: the tensor


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_flat_and_nested_data_give_the_same_rows(datatype: str) -> None:
    """``[a, b, c, d, ...]`` and ``[[a, b, c, d], ...]`` are the same tensor, returned as float64 rows."""
    flat = _rows(_request(_tensor([v for row in ROWS for v in row], datatype=datatype)))
    nested = _rows(_request(_tensor(ROWS, datatype=datatype)))
    assert flat.dtype == nested.dtype == np.float64
    assert flat.shape == (2, len(FEATURE_NAMES))
    np.testing.assert_array_equal(flat, nested)


def test_fp64_values_are_kept_exactly_and_fp32_values_rounded_to_float32() -> None:
    """The tensor is read in its own precision: FP32 data are the float32 values, widened."""
    np.testing.assert_array_equal(_rows(_request(_tensor(datatype="FP64"))), np.array(ROWS))
    fp32 = _rows(_request(_tensor(datatype="FP32")))
    np.testing.assert_array_equal(fp32, np.array(ROWS, dtype=np.float32).astype(np.float64))
    assert fp32[0, 0] != 5.1  # float32(5.1) widened is not the float64 5.1


def test_integers_are_numbers() -> None:
    """JSON integers are accepted like /predict accepts them."""
    np.testing.assert_array_equal(_rows(_request(_tensor([[5, 3, 1, 1]], shape=[1, 4]))), [[5.0, 3.0, 1.0, 1.0]])


def test_a_single_row_and_max_rows_are_accepted() -> None:
    """N may be anything from 1 to the batch limit."""
    assert _rows(_request(_tensor([ROWS[0]], shape=[1, 4]))).shape == (1, 4)
    assert _rows(_request(_tensor(ROWS * 5, shape=[10, 4])), max_rows=10).shape == (10, 4)


@pytest.mark.parametrize("count", [0, 2])
def test_anything_but_one_input_is_400(count: int) -> None:
    """Exactly one input tensor."""
    request = InferenceRequest.model_validate({"inputs": [_tensor()] * count})
    error = _rows_refusal(request)
    assert error.message == f"expected exactly one input tensor of shape [N, 4], got {count}"
    assert error.details[0]["field"] == "inputs"


@pytest.mark.parametrize("datatype", ["INT64", "FP16", "BYTES", "fp64", "BOOL"])
def test_a_datatype_other_than_fp32_or_fp64_is_400(datatype: str) -> None:
    """The datatype is matched exactly (the protocol spells them in capitals)."""
    error = _rows_refusal(_request(_tensor(datatype=datatype)))
    assert error.message == f"input 'x' has datatype {datatype}; expected FP32 or FP64"
    assert error.details[0]["field"] == "datatype"


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param([8], id="one-dimension"),
        pytest.param([2, 4, 1], id="three-dimensions"),
        pytest.param([2, 3], id="three-columns"),
        pytest.param([2, 5], id="five-columns"),
        pytest.param([0, 4], id="no-rows"),
        pytest.param([-2, 4], id="negative-rows"),
        pytest.param([MAX_ROWS + 1, 4], id="past-the-batch-limit"),
        pytest.param([], id="scalar"),
    ],
)
def test_a_shape_other_than_n_by_4_within_the_limit_is_400(shape: list[int]) -> None:
    """The shape is checked before any value is read: only [N, 4] with 1 <= N <= max rows."""
    error = _rows_refusal(_request(_tensor(data=[], shape=shape)))
    assert error.message == f"input 'x' has shape {shape}; expected [N, 4] with 1 <= N <= {MAX_ROWS}"
    assert error.details[0]["field"] == "shape"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(ROWS[0] * 2 + [1.0], id="flat-one-too-many"),
        pytest.param(ROWS[0], id="flat-too-few"),
        pytest.param([ROWS[0]], id="one-row-of-two"),
        pytest.param([ROWS[0], ROWS[1][:3]], id="short-row"),
        pytest.param([ROWS[0] + [1.0], ROWS[1][:3]], id="ragged-rows-summing-to-eight"),
        pytest.param([ROWS[0], ROWS[1], []], id="three-rows"),
        pytest.param({"rows": ROWS}, id="object"),
        pytest.param("5.1,3.5", id="string"),
        pytest.param(None, id="null"),
    ],
)
def test_data_whose_count_does_not_match_the_shape_is_400(data: Any) -> None:
    """The value count is checked against the shape, flat or as rows, before any value is looked at."""
    request = _request({"name": "x", "shape": [2, 4], "datatype": "FP64", "data": data})
    error = _rows_refusal(request)
    assert error.message == "input 'x' data must be 8 numbers, flat or as 2 rows of 4"
    assert error.details[0]["field"] == "data"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("5.1", "'5.1'", id="string"),
        pytest.param(True, "True", id="true"),
        pytest.param(False, "False", id="false"),
        pytest.param(None, "None", id="null"),
        pytest.param([1.0], "[1.0]", id="list"),
        pytest.param({"v": 1}, "{'v': 1}", id="object"),
    ],
)
def test_a_value_that_is_not_a_json_number_is_400_naming_its_index(value: Any, shown: str) -> None:
    """No coercion: strings, booleans, null and containers are refused, naming the flat index."""
    data = [5.1, 3.5, 1.4, 0.2, 6.3, value, 6.0, 2.5]
    error = _rows_refusal(_request(_tensor(data)))
    assert error.message == f"input 'x' value 5 is {shown}: every value must be a JSON number"
    assert (error.details[0]["field"], error.details[0]["rule"]) == ("inputs[0].data[5]", "float_type")


def test_a_long_value_and_name_are_echoed_cut() -> None:
    """A huge string value and a long tensor name appear in the message at most 80 characters each."""
    request = _request({**_tensor([5.1, 3.5, 1.4, "v" * 5000] + ROWS[1]), "name": "n" * MAX_NAME_CHARS})
    error = _rows_refusal(request)
    assert "v" * 81 not in error.message
    assert "n" * 81 not in error.message


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_an_integer_too_large_for_a_float_is_400_range(datatype: str) -> None:
    """A JSON integer beyond any float is refused by name, not a crash."""
    error = _rows_refusal(_request(_tensor([10**400, 3.5, 1.4, 0.2], shape=[1, 4], datatype=datatype)))
    assert error.message == "input 'x' holds a number too large"
    assert error.details[0]["rule"] == "range"


# input_rows: the range, in the tensor's precision


@pytest.mark.parametrize(
    ("value", "datatype"),
    [
        pytest.param(MIN_MEASUREMENT_CM, "FP64", id="fp64-min"),
        pytest.param(MAX_MEASUREMENT_CM, "FP64", id="fp64-max"),
        pytest.param(MIN_MEASUREMENT_CM, "FP32", id="fp32-min"),
        pytest.param(MAX_MEASUREMENT_CM, "FP32", id="fp32-max"),
        # Under 0.01 in float64, but float32(0.01) once rounded: accepted, as the README promises.
        pytest.param(float(np.float32(MIN_MEASUREMENT_CM)), "FP32", id="fp32-float32-of-min"),
        pytest.param(float(np.float32(MIN_MEASUREMENT_CM)) - 1e-12, "FP32", id="fp32-rounds-to-min"),
    ],
)
def test_values_at_the_edges_of_the_range_are_accepted(value: float, datatype: str) -> None:
    """The range is inclusive at both ends, compared in the tensor's own precision."""
    rows = _rows(_request(_tensor([value, 3.5, 1.4, 0.2], shape=[1, 4], datatype=datatype)))
    assert rows[0, 0] == float(np.dtype("<f4" if datatype == "FP32" else "<f8").type(value))


def test_float32_of_the_minimum_is_below_the_minimum_in_float64() -> None:
    """Why FP32 is compared in float32: the float32 nearest 0.01 is a hair under it."""
    assert float(np.float32(MIN_MEASUREMENT_CM)) < MIN_MEASUREMENT_CM
    error = _rows_refusal(_request(_tensor([float(np.float32(MIN_MEASUREMENT_CM)), 3.5, 1.4, 0.2], shape=[1, 4])))
    assert error.details[0]["rule"] == "range"  # the same number as FP64 is under the floor


@pytest.mark.parametrize(
    ("value", "datatype"),
    [
        pytest.param(float(np.nextafter(MIN_MEASUREMENT_CM, 0)), "FP64", id="fp64-just-under-min"),
        pytest.param(float(np.nextafter(MAX_MEASUREMENT_CM, np.inf)), "FP64", id="fp64-just-over-max"),
        pytest.param(float(np.nextafter(np.float32(MIN_MEASUREMENT_CM), np.float32(0))), "FP32", id="fp32-under-min"),
        pytest.param(float(np.nextafter(np.float32(MAX_MEASUREMENT_CM), np.float32(np.inf))), "FP32", id="fp32-over"),
        pytest.param(0, "FP64", id="zero"),
        pytest.param(-1.0, "FP64", id="negative"),
        pytest.param(5e-324, "FP64", id="subnormal"),
        pytest.param(1e39, "FP32", id="fp32-overflows-to-infinity"),
        pytest.param(float("nan"), "FP64", id="nan"),
        pytest.param(float("inf"), "FP64", id="infinity"),
        pytest.param(float("-inf"), "FP32", id="fp32-minus-infinity"),
    ],
)
def test_values_outside_the_range_are_400_naming_row_column_and_value(value: float, datatype: str) -> None:
    """The first bad value is named by row and feature; the rule is ``range``."""
    rows = [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, value, 2.5]]
    error = _rows_refusal(_request(_tensor(rows, datatype=datatype)))
    assert error.message.startswith("input 'x' row 1 petal_length=")
    assert error.message.endswith("every value must be finite, >= 0.01 and <= 100")
    assert (error.details[0]["field"], error.details[0]["rule"]) == ("inputs[0].data[1][2]", "range")


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("value", [0.0, float("nan"), float("inf"), 100.5])
def test_large_and_small_tensors_refuse_the_same_value_the_same_way(value: float, datatype: str) -> None:
    """A tensor past SMALL_TENSOR values is checked by numpy, a smaller one over plain floats: the same bad value,
    in the same place, gets the same answer; every good value passes both."""
    good = [[5.1, 3.5, 1.4, 0.2]] * (SMALL_TENSOR // 4 + 1)
    answers = []
    for before in ([], good):
        rows = [*before, [6.3, 3.3, value, 2.5]]
        error = _rows_refusal(_request(_tensor(rows, shape=[len(rows), 4], datatype=datatype)), max_rows=100)
        answers.append((error.message.replace(f"row {len(before)} ", "row N "), error.details[0]["rule"]))
        good_rows = _request(_tensor(good, shape=[len(good), 4], datatype=datatype))
        assert input_rows(good_rows, b"", 100).shape == (len(good), 4)
    assert answers[0] == answers[1]


def test_the_first_bad_value_in_row_order_is_named() -> None:
    """With several bad values, the error names the first in row-major order."""
    rows = [[5.1, 3.5, 1.4, 0.2], [6.3, 0.0, 6.0, 0.0], [0.0, 3.0, 4.0, 1.0]]
    error = _rows_refusal(_request(_tensor(rows, shape=[3, 4])))
    assert error.details[0]["field"] == "inputs[0].data[1][1]"
    assert "row 1 sepal_width=0.0" in error.message


# input_rows: binary tensors


@pytest.mark.parametrize(("datatype", "dtype"), [("FP64", "<f8"), ("FP32", "<f4")])
def test_binary_data_are_read_little_endian_in_the_declared_type(datatype: str, dtype: str) -> None:
    """``binary_data_size`` bytes after the JSON header are the row-major tensor, in little-endian order."""
    raw = np.asarray(ROWS, dtype=dtype).tobytes()
    request = _request(_tensor(data=None, datatype=datatype, parameters={"binary_data_size": len(raw)}))
    rows = _rows(request, raw)
    assert rows.dtype == np.float64
    np.testing.assert_array_equal(rows, np.asarray(ROWS, dtype=dtype).astype(np.float64))


def test_binary_fp32_minimum_is_accepted_like_json_fp32() -> None:
    """float32(0.01) sent as bytes is inside the range, as it is in JSON."""
    raw = np.array([[MIN_MEASUREMENT_CM, 3.5, 1.4, 0.2]], dtype="<f4").tobytes()
    request = _request(_tensor(data=None, shape=[1, 4], datatype="FP32", parameters={"binary_data_size": 16}))
    assert _rows(request, raw)[0, 0] == float(np.float32(MIN_MEASUREMENT_CM))


@pytest.mark.parametrize(
    ("size", "binary", "datatype"),
    [
        pytest.param(64, b"\0" * 63, "FP64", id="fewer-bytes-than-declared"),
        pytest.param(64, b"\0" * 65, "FP64", id="more-bytes-than-declared"),
        pytest.param(32, b"\0" * 32, "FP64", id="declared-fp32-size-for-fp64"),
        pytest.param(64, b"\0" * 64, "FP32", id="declared-fp64-size-for-fp32"),
        pytest.param(64.0, b"\0" * 64, "FP64", id="size-as-float"),
        pytest.param("64", b"\0" * 64, "FP64", id="size-as-string"),
        pytest.param(True, b"\0", "FP64", id="size-as-bool"),
    ],
)
def test_a_binary_size_that_does_not_match_is_400(size: Any, binary: bytes, datatype: str) -> None:
    """Declared, sent and needed byte counts must all agree, and the size must be an integer."""
    request = _request(_tensor(data=None, datatype=datatype, parameters={"binary_data_size": size}))
    error = _rows_refusal(request, binary)
    assert error.details[0]["field"] == "parameters.binary_data_size"
    assert f"{len(binary)} sent" in error.message


def test_binary_bytes_without_a_declared_size_are_400() -> None:
    """Bytes after the header that no input claims are refused, not ignored."""
    error = _rows_refusal(_request(_tensor(parameters={"other": 1})), b"\0" * 8)
    assert error.message == "8 binary bytes sent but no input declares binary_data_size"


def test_binary_values_out_of_range_are_400() -> None:
    """Binary values are checked exactly like JSON ones: a NaN in the bytes is named."""
    values = np.array([[5.1, 3.5, 1.4, 0.2], [6.3, np.nan, 6.0, 2.5]], dtype="<f8")
    request = _request(_tensor(data=None, parameters={"binary_data_size": 64}))
    error = _rows_refusal(request, values.tobytes())
    assert error.details[0]["field"] == "inputs[0].data[1][1]"
    assert "sepal_width=nan" in error.message


# requested_outputs


def test_no_outputs_named_answers_every_output_as_json() -> None:
    """Without ``outputs``, both outputs, in declared order, as JSON."""
    assert requested_outputs(_request()) == [("predict", False), ("predict_proba", False)]
    assert requested_outputs(_request(outputs=[])) == [("predict", False), ("predict_proba", False)]


def test_binary_data_output_makes_every_default_output_binary() -> None:
    """``parameters.binary_data_output`` true asks for binary outputs by default."""
    request = _request(parameters={"binary_data_output": True})
    assert requested_outputs(request) == [("predict", True), ("predict_proba", True)]


def test_named_outputs_are_answered_in_the_order_asked() -> None:
    """Only the outputs named, in the request's order."""
    request = _request(outputs=[{"name": "predict_proba"}, {"name": "predict"}])
    assert requested_outputs(request) == [("predict_proba", False), ("predict", False)]
    assert requested_outputs(_request(outputs=[{"name": "predict"}])) == [("predict", False)]


def test_each_output_may_override_the_default() -> None:
    """An output's ``binary_data`` wins over ``binary_data_output``, either way."""
    request = _request(
        parameters={"binary_data_output": True},
        outputs=[{"name": "predict", "parameters": {"binary_data": False}}, {"name": "predict_proba"}],
    )
    assert requested_outputs(request) == [("predict", False), ("predict_proba", True)]
    request = _request(outputs=[{"name": "predict_proba", "parameters": {"binary_data": True}}])
    assert requested_outputs(request) == [("predict_proba", True)]


def test_an_unknown_output_is_400_listing_the_outputs() -> None:
    """A name the model does not have is refused, naming the ones it has."""
    error = _v2_refusal(requested_outputs, _request(outputs=[{"name": "logits"}]))
    assert error.message == "unknown output 'logits'; this model has ['predict', 'predict_proba']"


@pytest.mark.parametrize("value", ["true", 1, 0, None, [True]])
def test_a_binary_flag_that_is_not_a_boolean_is_400(value: Any) -> None:
    """``binary_data_output`` and ``binary_data`` are JSON booleans; even an explicit null is refused."""
    error = _v2_refusal(requested_outputs, _request(parameters={"binary_data_output": value}))
    assert (error.details[0]["field"], error.details[0]["rule"]) == ("parameters.binary_data_output", "bool_type")
    request = _request(outputs=[{"name": "predict"}, {"name": "predict_proba", "parameters": {"binary_data": value}}])
    error = _v2_refusal(requested_outputs, request)
    assert error.details[0]["field"] == "outputs[1].parameters.binary_data"


# encode_response


TENSORS = {
    "predict": np.array([0, 2]),
    "predict_proba": np.array([[0.9, 0.05, 0.05], [0.0, 0.25, 0.75]]),
}
HEADER = {"model_name": "heuristic", "model_version": "v1", "id": "r1"}


def test_a_json_answer_has_the_header_and_every_output_as_data() -> None:
    """Plain JSON: the header's keys, then each output with its datatype, shape and flat row-major data."""
    body, headers = encode_response(HEADER, TENSORS, [("predict", False), ("predict_proba", False)])
    assert headers == {"content-type": "application/json"}
    assert json.loads(body) == {
        **HEADER,
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [2, 3], "data": [0.9, 0.05, 0.05, 0.0, 0.25, 0.75]},
        ],
    }


def test_outputs_are_converted_to_their_declared_types() -> None:
    """Class indices become INT64 and probabilities FP64, whatever type the model produced."""
    probabilities32 = TENSORS["predict_proba"].astype(np.float32)
    tensors = {"predict": np.array([1.0, 2.0], dtype=np.float32), "predict_proba": probabilities32}
    body, headers = encode_response({}, tensors, [("predict", False), ("predict_proba", True)])
    header_length = int(headers[BINARY_HEADER])
    predict = json.loads(body[:header_length])["outputs"][0]
    assert predict["data"] == [1, 2]
    assert all(type(value) is int for value in predict["data"])
    raw = body[header_length:]
    assert len(raw) == 6 * 8  # float32 probabilities widened to 8 bytes each
    np.testing.assert_array_equal(np.frombuffer(raw, "<f8"), probabilities32.astype(np.float64).ravel())


def test_a_binary_answer_is_the_json_header_then_the_raw_tensors() -> None:
    """With every output binary: a JSON header declaring sizes, its length in the header, then the bytes in order."""
    body, headers = encode_response(HEADER, TENSORS, [("predict_proba", True), ("predict", True)])
    assert headers["content-type"] == BINARY_MEDIA_TYPE
    header_length = int(headers[BINARY_HEADER])
    answer = json.loads(body[:header_length])
    assert {k: answer[k] for k in HEADER} == HEADER
    proba, predict = answer["outputs"]
    assert proba == {
        "name": "predict_proba",
        "datatype": "FP64",
        "shape": [2, 3],
        "parameters": {"binary_data_size": 48},
    }
    assert predict == {"name": "predict", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}
    raw = body[header_length:]
    assert len(raw) == 48 + 16
    np.testing.assert_array_equal(np.frombuffer(raw[:48], "<f8").reshape(2, 3), TENSORS["predict_proba"])
    np.testing.assert_array_equal(np.frombuffer(raw[48:], "<i8"), TENSORS["predict"])


def test_a_mixed_answer_sends_only_the_binary_outputs_as_bytes() -> None:
    """One output as data and one as bytes: the answer is binary, and only the binary one follows the header."""
    body, headers = encode_response({}, TENSORS, [("predict", False), ("predict_proba", True)])
    header_length = int(headers[BINARY_HEADER])
    outputs = json.loads(body[:header_length])["outputs"]
    assert outputs[0]["data"] == [0, 2]
    assert "data" not in outputs[1]
    assert body[header_length:] == TENSORS["predict_proba"].astype("<f8").tobytes()


def test_binary_tensors_are_row_major_whatever_the_memory_layout() -> None:
    """A column-major (Fortran-ordered) probability array is still sent row by row."""
    fortran = np.asfortranarray(TENSORS["predict_proba"])
    body, headers = encode_response({}, {**TENSORS, "predict_proba": fortran}, [("predict_proba", True)])
    raw = body[int(headers[BINARY_HEADER]) :]
    assert raw == TENSORS["predict_proba"].tobytes(order="C")


def test_only_the_outputs_asked_for_are_answered() -> None:
    """An answer holds the wanted outputs and nothing else."""
    body, _ = encode_response({}, TENSORS, [("predict", False)])
    assert [o["name"] for o in json.loads(body)["outputs"]] == ["predict"]
    assert set(OUTPUT_DTYPES) == {"predict", "predict_proba"}
