"""read_json: 415 for another media type, 400 for an empty or broken body, 422 for bad fields or too many of them."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request
from starlette.types import Message

from ml_production_service.server.body import is_json, read_json, too_many_fields, unsupported_media_type
from ml_production_service.server.errors import MAX_ERROR_DETAILS, ApiError
from ml_production_service.server.schemas import IrisFeatures, max_fields

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ROW_FIELDS = max_fields(1)  # what /predict allows: 4 fields plus the slack


def _request(body: bytes, content_type: str | None = "application/json", chunk: int | None = None) -> Request:
    """A Starlette request as the server builds it: a scope, and a receive callable handing out the body."""
    headers = [] if content_type is None else [(b"content-type", content_type.encode("latin-1"))]
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": headers}
    size = chunk or max(len(body), 1)
    pieces = [body[start : start + size] for start in range(0, len(body), size)] or [b""]
    messages: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": index < len(pieces) - 1}
        for index, piece in enumerate(pieces)
    ]

    async def receive() -> Message:
        return messages.pop(0)

    return Request(scope, receive)


def _read(request: Request, limit: int = ROW_FIELDS) -> IrisFeatures:
    return asyncio.run(read_json(request, IrisFeatures, limit))


def _refusal(request: Request, limit: int = ROW_FIELDS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        _read(request, limit)
    return caught.value


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


# is_json and the media type


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "  application/json  ;charset=UTF-8",
        "application/problem+json",
        "application/vnd.api+json",
        "APPLICATION/MERGE-PATCH+JSON; x=y",
    ],
)
def test_json_media_types_are_json(content_type: str) -> None:
    """``application/json`` and every ``+json`` type, in any case, with any parameters."""
    assert is_json(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "",
        "text/plain",
        "text/json",
        "application/jsonx",
        "application/json-seq",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "multipart/form-data; boundary=application/json",
        "json",
    ],
)
def test_other_media_types_are_not_json(content_type: str) -> None:
    """Only the media type before ``;`` counts: a parameter mentioning JSON does not make a body JSON."""
    assert not is_json(content_type)


def test_unsupported_media_type_names_what_was_sent_and_expected() -> None:
    """415 naming the type sent (cut to 80 characters, or ``none``) and the one expected."""
    error = unsupported_media_type("text/plain")
    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert error.message == "Content-Type must be application/json, got text/plain"
    assert error.details == [{"field": "content-type", "rule": "media_type", "message": "expected application/json"}]
    assert unsupported_media_type("").message.endswith("got none")
    assert unsupported_media_type("x" * 500).message.endswith("got " + "x" * 80)
    assert unsupported_media_type("text/plain", "application/json or application/octet-stream").message == (
        "Content-Type must be application/json or application/octet-stream, got text/plain"
    )


def test_too_many_fields_is_one_422_detail_naming_count_and_limit() -> None:
    """The refusal is a validation error with one ``max_fields`` detail, however many fields there were."""
    error = too_many_fields(5000, 68)
    assert (error.status, error.code) == (422, "validation_error")
    assert error.details == [
        {
            "field": "body",
            "rule": "max_fields",
            "message": "body has 5000 fields (':'), more than any valid request (68)",
        }
    ]
    assert error.message == "request validation failed: body: " + error.details[0]["message"]


# read_json


def test_a_valid_body_is_validated_into_the_model() -> None:
    """A JSON object with the four measurements comes back as the model."""
    features = _read(_request(_body(SETOSA)))
    assert features == IrisFeatures(**SETOSA)


def test_a_body_received_in_several_chunks_is_read_whole() -> None:
    """The body may arrive in many ``http.request`` messages: all of them are read before validation."""
    features = _read(_request(_body(SETOSA), chunk=3))
    assert features.petal_width == 0.2


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/problem+json"])
def test_json_content_types_with_parameters_or_suffix_are_read(content_type: str) -> None:
    """Any JSON media type is accepted, not only the exact string ``application/json``."""
    assert _read(_request(_body(SETOSA), content_type)).sepal_length == 5.1


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        pytest.param(None, "none", id="absent"),
        pytest.param("", "none", id="empty"),
        pytest.param("text/plain", "text/plain", id="text"),
        pytest.param("application/x-www-form-urlencoded", "application/x-www-form-urlencoded", id="form"),
    ],
)
def test_another_content_type_is_415_before_the_body_is_read(content_type: str | None, named: str) -> None:
    """A valid JSON body under another (or no) media type is refused without being read."""

    async def never_receive() -> Message:
        raise AssertionError("the body was read")

    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    request = Request({"type": "http", "method": "POST", "headers": headers}, never_receive)
    error = _refusal(request)
    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert error.message.endswith(f"got {named}")


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n\t "])
def test_an_empty_or_blank_body_is_400_empty_body(body: bytes) -> None:
    """Nothing but whitespace is its own error, not a JSON syntax error."""
    error = _refusal(_request(body))
    assert (error.status, error.code) == (400, "empty_body")
    assert error.details == [{"field": "body", "rule": "required", "message": "a JSON object is required"}]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"sepal_length": 5.1,', id="truncated"),
        pytest.param(b"{sepal_length: 5.1}", id="unquoted-key"),
        pytest.param(b'{"sepal_length": "\xff"}', id="invalid-utf8"),
        pytest.param(b"{" + b'"a":{' * 250 + b"}" * 251, id="nested-deeper-than-the-parser-limit"),
    ],
)
def test_broken_json_is_400_invalid_json(body: bytes) -> None:
    """A body that is not JSON is 400 invalid_json."""
    error = _refusal(_request(body))
    assert (error.status, error.code) == (400, "invalid_json")
    assert error.details[0]["rule"] == "json_invalid"


@pytest.mark.parametrize(
    ("payload", "field", "rule"),
    [
        pytest.param({**SETOSA, "petal_width": 0}, "petal_width", "greater_than_equal", id="zero"),
        pytest.param({**SETOSA, "petal_width": "0.2"}, "petal_width", "float_type", id="string"),
        pytest.param({**SETOSA, "petal_width": True}, "petal_width", "float_type", id="boolean"),
        pytest.param({**SETOSA, "petal_width": None}, "petal_width", "float_type", id="null"),
        pytest.param({**SETOSA, "colour": "blue"}, "colour", "extra_forbidden", id="extra-field"),
        pytest.param({k: v for k, v in SETOSA.items() if k != "sepal_width"}, "sepal_width", "missing", id="missing"),
        pytest.param([SETOSA], "body", "model_type", id="array"),
    ],
)
def test_a_field_breaking_its_rule_is_422_naming_field_and_rule(payload: object, field: str, rule: str) -> None:
    """Valid JSON that breaks the model is 422 validation_error naming the field and the rule."""
    error = _refusal(_request(_body(payload)))
    assert (error.status, error.code) == (422, "validation_error")
    assert (error.details[0]["field"], error.details[0]["rule"]) == (field, rule)


def test_up_to_the_field_limit_every_field_error_is_reported() -> None:
    """A body with exactly ``max_fields`` colons is validated field by field."""
    extras = {f"x{i}": 1 for i in range(ROW_FIELDS - len(SETOSA))}
    body = _body({**SETOSA, **extras})
    assert body.count(b":") == ROW_FIELDS
    error = _refusal(_request(body))
    assert (error.status, error.code) == (422, "validation_error")
    assert error.details[0]["rule"] == "extra_forbidden"
    assert len(error.details) == MAX_ERROR_DETAILS
    assert error.details_omitted == len(extras) - MAX_ERROR_DETAILS


def test_one_field_over_the_limit_is_refused_unread_with_one_detail() -> None:
    """One colon more than ``max_fields`` and the body is refused as a whole, before any field is validated."""
    extras = {f"x{i}": 1 for i in range(ROW_FIELDS - len(SETOSA) + 1)}
    body = _body({**SETOSA, **extras})
    error = _refusal(_request(body))
    assert (error.status, error.code) == (422, "validation_error")
    assert error.details == [
        {
            "field": "body",
            "rule": "max_fields",
            "message": f"body has {ROW_FIELDS + 1} fields (':'), more than any valid request ({ROW_FIELDS})",
        }
    ]
    assert error.details_omitted == 0


def test_max_fields_is_the_callers_limit() -> None:
    """The same valid body is read under a limit it fits, and refused under one it does not."""
    body = _body(SETOSA)
    assert _read(_request(body), limit=4) == IrisFeatures(**SETOSA)
    assert _refusal(_request(body), limit=3).details[0]["rule"] == "max_fields"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"a": 1' + b', "b": 2' * 500, id="unterminated-object"),
        pytest.param(b":" * 10_000, id="only-colons"),
        pytest.param(b'{"a":1}' + b":" * 500, id="trailing-colons"),
        pytest.param(b'{"a":"\xff"' + b', "b": 2' * 500 + b"}", id="invalid-utf8"),
    ],
)
def test_broken_json_over_the_field_limit_is_still_400_invalid_json(body: bytes) -> None:
    """The colon count never hides a syntax error: a broken body over the limit is 400, not 422 max_fields."""
    assert body.count(b":") > ROW_FIELDS
    error = _refusal(_request(body))
    assert (error.status, error.code) == (400, "invalid_json")


def test_a_non_object_over_the_field_limit_is_422_naming_the_body() -> None:
    """An array of strings full of colons is valid JSON but no object: 422 for the body, not a field count."""
    error = _refusal(_request(_body([":" * 100])))
    assert (error.status, error.code) == (422, "validation_error")
    assert error.details == [{"field": "body", "rule": "model_type", "message": "Input should be an object"}]
