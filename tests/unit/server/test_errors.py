"""The one error shape: bounded details, echoed client input cut short, 400 for broken JSON and 422 for bad fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml_production_service.server.errors import (
    JSON,
    MAX_ECHO_CHARS,
    MAX_ERROR_DETAILS,
    ApiError,
    BodyTooLarge,
    details_from,
    echo,
    error_body,
    error_response,
    field_name,
    from_validation_error,
    summary,
)
from ml_production_service.server.schemas import ErrorResponse


class _Row(BaseModel):
    """A strict request model: unknown fields are errors, ``x`` is a positive number."""

    model_config = ConfigDict(extra="forbid")

    x: float = Field(strict=True, gt=0)


def _validation_error(body: str | bytes) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Row.model_validate_json(body)
    return caught.value


def _detail(index: int) -> dict[str, str]:
    return {"field": f"f{index}", "rule": "r", "message": f"m{index}"}


def _parsed(error: ApiError, request_id: str | None = "rid") -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error_body(error, request_id))
    ErrorResponse.model_validate(body, strict=True, extra="forbid")  # always the documented shape
    return body


# echo


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("petal_length", "petal_length", id="string-as-is"),
        pytest.param("", "", id="empty-string"),
        pytest.param("x" * MAX_ECHO_CHARS, "x" * MAX_ECHO_CHARS, id="string-at-the-limit"),
        pytest.param(5, "5", id="int-as-repr"),
        pytest.param(None, "None", id="none-as-repr"),
        pytest.param(True, "True", id="bool-as-repr"),
        pytest.param(b"ab", "b'ab'", id="bytes-as-repr"),
        pytest.param(["a"], "['a']", id="list-as-repr"),
    ],
)
def test_echo_repeats_short_input_unchanged(value: object, expected: str) -> None:
    """Input up to MAX_ECHO_CHARS is repeated whole: a string as itself, anything else as its repr."""
    assert echo(value) == expected


def test_echo_cuts_long_input_to_the_limit_with_an_ellipsis() -> None:
    """One character over the limit is cut: the answer never repeats more than MAX_ECHO_CHARS characters."""
    text = "abcdefghij" * 9  # 90 characters, each position recognisable
    cut = echo(text[: MAX_ECHO_CHARS + 1])
    assert len(cut) == MAX_ECHO_CHARS
    assert cut == text[: MAX_ECHO_CHARS - 3] + "..."
    assert echo("y" * 100_000) == "y" * (MAX_ECHO_CHARS - 3) + "..."


def test_echo_cuts_a_long_repr_too() -> None:
    """A long non-string value (a huge number, a list) is cut after its repr is taken."""
    value = 10**200
    assert echo(value) == repr(value)[: MAX_ECHO_CHARS - 3] + "..."
    assert len(echo(list(range(1000)))) == MAX_ECHO_CHARS


# ApiError


def test_api_error_keeps_status_code_message_and_headers() -> None:
    """The exception's text is the message; details default to none."""
    error = ApiError(418, "teapot", "short and stout", headers={"retry-after": "1"})
    assert (error.status, error.code, error.message, str(error)) == (
        418,
        "teapot",
        "short and stout",
        "short and stout",
    )
    assert error.details == []
    assert error.details_omitted == 0
    assert error.headers == {"retry-after": "1"}


@pytest.mark.parametrize("count", [0, 1, MAX_ERROR_DETAILS - 1, MAX_ERROR_DETAILS])
def test_api_error_up_to_the_limit_lists_every_detail(count: int) -> None:
    """Up to MAX_ERROR_DETAILS details are all listed and none counted as omitted."""
    details = [_detail(i) for i in range(count)]
    error = ApiError(422, "validation_error", "bad", details)
    assert error.details == details
    assert error.details_omitted == 0
    assert "details_omitted" not in _parsed(error)


def test_api_error_over_the_limit_lists_the_first_details_and_counts_the_rest() -> None:
    """Past MAX_ERROR_DETAILS the first ones are kept, in order, and the answer says how many more there were."""
    details = [_detail(i) for i in range(MAX_ERROR_DETAILS + 7)]
    error = ApiError(422, "validation_error", "bad", details)
    assert error.details == details[:MAX_ERROR_DETAILS]
    assert error.details_omitted == 7
    body = _parsed(error)
    assert [d["field"] for d in body["details"]] == [f"f{i}" for i in range(MAX_ERROR_DETAILS)]
    assert body["details_omitted"] == 7


def test_api_error_total_counts_details_the_caller_never_built() -> None:
    """A caller that built only the first details passes the real total; the rest are counted from it."""
    error = ApiError(422, "validation_error", "bad", [_detail(i) for i in range(3)], total_details=40)
    assert len(error.details) == 3
    assert error.details_omitted == 37
    assert _parsed(error)["details_omitted"] == 37


@pytest.mark.parametrize("total", [0, 2, 3])
def test_api_error_total_not_above_the_listed_details_omits_nothing(total: int) -> None:
    """A total at or under the listed count never shows ``details_omitted`` (the model requires it >= 1)."""
    error = ApiError(422, "validation_error", "bad", [_detail(i) for i in range(3)], total_details=total)
    assert "details_omitted" not in _parsed(error)


def test_body_too_large_names_the_limit_and_closes_the_connection() -> None:
    """413 with the limit in the message and the detail, and ``connection: close``: the rest is never read."""
    error = BodyTooLarge(2048)
    assert (error.status, error.code) == (413, "body_too_large")
    assert "2048 bytes" in error.message and "MPS_MAX_BODY_BYTES" in error.message
    assert error.details == [{"field": "body", "rule": "max_bytes", "message": "at most 2048 bytes"}]
    assert error.headers == {"connection": "close"}


# error_body and error_response


def test_error_body_is_the_one_error_shape() -> None:
    """``error``, ``code``, ``details`` and ``request_id``, in that order, as compact JSON."""
    error = ApiError(400, "invalid_json", "not JSON", [_detail(0)])
    assert error_body(error, "abc") == (
        b'{"error":"not JSON","code":"invalid_json",'
        b'"details":[{"field":"f0","rule":"r","message":"m0"}],"request_id":"abc"}'
    )


def test_error_body_without_a_request_id_says_null() -> None:
    """An error raised before a request id exists still has the key, as null."""
    assert _parsed(ApiError(500, "internal_error", "boom"), None)["request_id"] is None


def test_error_response_is_json_with_the_error_status() -> None:
    """The response carries the status, the JSON media type and the serialised body."""
    error = ApiError(404, "not_found", "nothing here")
    response = error_response(error, "rid")
    assert response.status_code == 404
    assert response.media_type == JSON
    assert response.headers["content-type"] == "application/json"
    assert response.body == error_body(error, "rid")
    assert response.headers["content-length"] == str(len(response.body))
    assert "connection" not in response.headers


def test_error_response_merges_headers_the_call_winning() -> None:
    """The error's own headers are sent, plus the caller's; a header both set takes the caller's value."""
    error = ApiError(503, "busy", "later", headers={"retry-after": "1", "connection": "close"})
    response = error_response(error, "rid", headers={"retry-after": "5", "allow": "POST"})
    assert response.headers["retry-after"] == "5"
    assert response.headers["connection"] == "close"
    assert response.headers["allow"] == "POST"
    assert error.headers == {"retry-after": "1", "connection": "close"}  # the shared error is not modified


# field_name, details_from, summary


@pytest.mark.parametrize(
    ("location", "prefix", "expected"),
    [
        pytest.param(("instances", 3, "petal_length"), "", "instances[3].petal_length", id="nested"),
        pytest.param((), "", "body", id="empty-is-body"),
        pytest.param([], "", "body", id="empty-list-is-body"),
        pytest.param(("x",), "", "x", id="one-name"),
        pytest.param((0, "x"), "", "[0].x", id="leading-index"),
        pytest.param((2,), "instances", "instances[2]", id="prefix-then-index"),
        pytest.param(("shape", 1), "inputs[0]", "inputs[0].shape[1]", id="prefix-then-name"),
        pytest.param((), "inputs", "inputs", id="prefix-alone"),
    ],
)
def test_field_name_joins_a_location_into_a_path(location: tuple[Any, ...], prefix: str, expected: str) -> None:
    """Names are joined with dots, list indices in brackets; an empty location is the body itself."""
    assert field_name(location, prefix) == expected


def test_field_name_cuts_each_client_chosen_name() -> None:
    """An unknown field's name is the client's: each part is cut to MAX_ECHO_CHARS."""
    long_name = "n" * 500
    assert field_name((long_name,)) == echo(long_name)
    assert field_name(("instances", 0, long_name)) == f"instances[0].{echo(long_name)}"


def test_details_from_turns_error_dicts_into_field_rule_message() -> None:
    """Each error becomes its field path, its type as the rule and its message."""
    errors = [
        {"loc": ("instances", 1, "petal_width"), "type": "greater_than", "msg": "Input should be greater than 0"},
        {"type": "missing", "msg": "Field required"},
        {"loc": ("x",)},
    ]
    assert details_from(errors) == [
        {"field": "instances[1].petal_width", "rule": "greater_than", "message": "Input should be greater than 0"},
        {"field": "body", "rule": "missing", "message": "Field required"},
        {"field": "x", "rule": "None", "message": "None"},
    ]
    assert details_from(errors[:1], prefix="query")[0]["field"] == "query.instances[1].petal_width"


def test_details_from_converts_at_most_the_limit_and_cuts_every_text() -> None:
    """A thousand errors give MAX_ERROR_DETAILS details; long rules and messages are cut."""
    errors = [{"loc": ("f" * 300,), "type": "t" * 300, "msg": "m" * 300}] * 1000
    details = details_from(errors)
    assert len(details) == MAX_ERROR_DETAILS
    for detail in details:
        assert set(detail) == {"field", "rule", "message"}
        assert all(len(text) == MAX_ECHO_CHARS and text.endswith("...") for text in detail.values())


def test_summary_lists_up_to_five_details() -> None:
    """``field: message`` pairs joined by ``; ``, with no count when all are shown."""
    details = [_detail(i) for i in range(5)]
    assert summary(details[:1], 1) == "f0: m0"
    assert summary(details, 5) == "f0: m0; f1: m1; f2: m2; f3: m3; f4: m4"
    assert summary([], 0) == ""


def test_summary_counts_the_details_it_does_not_show() -> None:
    """Past five, the rest are counted, including errors that never became details."""
    details = [_detail(i) for i in range(MAX_ERROR_DETAILS)]
    assert summary(details, MAX_ERROR_DETAILS) == "f0: m0; f1: m1; f2: m2; f3: m3; f4: m4 (and 5 more)"
    assert summary(details, 250).endswith("f4: m4 (and 245 more)")
    assert summary(details[:2], 3) == "f0: m0; f1: m1 (and 1 more)"


# from_validation_error


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"x": ', id="truncated"),
        pytest.param("{'x': 1}", id="single-quotes"),
        pytest.param(b'{"x": "\xff"}', id="invalid-utf8"),
        pytest.param("[" * 300 + "]" * 300, id="nested-past-the-parser-limit"),
    ],
)
def test_broken_json_is_400_invalid_json(body: str | bytes) -> None:
    """A body that is not JSON at all is the client's syntax error: 400, not a field's rule."""
    error = from_validation_error(_validation_error(body))
    assert (error.status, error.code) == (400, "invalid_json")
    assert error.message.startswith("request body is not valid JSON: ")
    assert len(error.details) == 1
    assert error.details[0]["field"] == "body"
    assert error.details[0]["rule"] == "json_invalid"


def test_invalid_json_message_repeats_at_most_the_echo_limit() -> None:
    """The parser's message is cut, and the body itself (include_input=False) never appears."""
    error = from_validation_error(_validation_error('{"x": ' + "[" * 300 + '"secret-body-text'))
    assert len(error.message) <= len("request body is not valid JSON: ") + MAX_ECHO_CHARS
    assert "secret-body-text" not in error_body(error, None).decode()


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        pytest.param('{"x": 0}', "x", "greater_than", id="out-of-range"),
        pytest.param('{"x": "1.5"}', "x", "float_type", id="string-number"),
        pytest.param("{}", "x", "missing", id="missing"),
        pytest.param("[1]", "body", "model_type", id="not-an-object"),
    ],
)
def test_valid_json_breaking_a_rule_is_422_naming_field_and_rule(body: str, field: str, rule: str) -> None:
    """JSON that parses but breaks the model is 422 validation_error, with the field and the rule."""
    error = from_validation_error(_validation_error(body))
    assert (error.status, error.code) == (422, "validation_error")
    assert error.details[0]["field"] == field
    assert error.details[0]["rule"] == rule
    assert error.message == f"request validation failed: {field}: {error.details[0]['message']}"
    assert error.details_omitted == 0


def test_many_field_errors_list_ten_and_count_the_rest() -> None:
    """25 unknown fields: ten details, ``details_omitted`` 16 (the 26th error is the missing ``x``)."""
    body = json.dumps({f"unknown{i}": 1 for i in range(25)})
    validation_error = _validation_error(body)
    assert validation_error.error_count() == 26
    error = from_validation_error(validation_error)
    assert (error.status, error.code) == (422, "validation_error")
    assert len(error.details) == MAX_ERROR_DETAILS
    assert error.details_omitted == 16
    assert error.message.endswith("(and 21 more)")
    parsed = _parsed(error)
    assert parsed["details_omitted"] == 16
    assert len(parsed["details"]) == MAX_ERROR_DETAILS
