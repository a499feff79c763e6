"""Logging: one stream on stderr, one format for the service's records and uvicorn's."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from ml_production_service.configs import LogFormat, ServiceConfig
from ml_production_service.logging import (
    LINE_FLUSH_S,
    ROUTED_LOGGERS,
    SILENCED_LOGGERS,
    configure_logging,
    get_logger,
    log_line,
    resolve_format,
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back so other tests are unaffected."""
    names = ["", *ROUTED_LOGGERS, *SILENCED_LOGGERS]
    saved = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level, logging.getLogger(name).propagate)
        for name in names
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    structlog.reset_defaults()


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_format_writes_one_json_object_per_line_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """With MPS_LOG_FORMAT=json each record is one JSON line on stderr with event, level and timestamp."""
    configure_logging(ServiceConfig(log_format="json"))
    get_logger("ml_production_service.test").info("model_loaded", model_type="heuristic", rows=3)
    captured = capsys.readouterr()
    assert captured.out == ""
    [record] = _json_lines(captured.err)
    assert record["event"] == "model_loaded"
    assert record["level"] == "info"
    assert record["logger"] == "ml_production_service.test"
    assert (record["model_type"], record["rows"]) == ("heuristic", 3)
    timestamp = datetime.fromisoformat(str(record["timestamp"]))
    assert timestamp.utcoffset() is not None and timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_json_records_carry_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    """Values bound for a request (its request_id) appear on every line logged while it runs."""
    configure_logging(ServiceConfig(log_format="json"))
    structlog.contextvars.bind_contextvars(request_id="abc123")
    try:
        get_logger("ml_production_service.test").info("request_done")
    finally:
        structlog.contextvars.clear_contextvars()
    [record] = _json_lines(capsys.readouterr().err)
    assert record["request_id"] == "abc123"


def test_json_exceptions_are_rendered_inside_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A logged exception stays inside its JSON line, traceback included."""
    configure_logging(ServiceConfig(log_format="json"))
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("ml_production_service.test").exception("prediction_failed")
    [record] = _json_lines(capsys.readouterr().err)
    assert record["level"] == "error"
    assert "ValueError: boom" in str(record["exception"])


def test_uvicorn_records_use_the_same_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn's start-up lines are JSON like the service's own, so one stream has one format."""
    configure_logging(ServiceConfig(log_format="json"))
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("uvicorn").warning("something %s", "odd")
    records = _json_lines(capsys.readouterr().err)
    assert [r["event"] for r in records] == ["Application startup complete.", "something odd"]
    assert [r["logger"] for r in records] == ["uvicorn.error", "uvicorn"]
    assert [r["level"] for r in records] == ["info", "warning"]
    assert all("timestamp" in r for r in records)


def test_standard_library_records_use_the_same_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    """A third-party library's stdlib record is rendered as JSON too."""
    configure_logging(ServiceConfig(log_format="json"))
    logging.getLogger("some.library").error("disk full")
    [record] = _json_lines(capsys.readouterr().err)
    assert (record["event"], record["level"], record["logger"]) == ("disk full", "error", "some.library")


def test_uvicorn_access_lines_are_silenced(capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn's own access lines are dropped: the service writes one canonical line per request instead."""
    configure_logging(ServiceConfig(log_format="json"))
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /health HTTP/1.1" 200')
    assert capsys.readouterr().err == ""


def test_records_below_the_level_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    """MPS_LOG_LEVEL=WARNING hides info lines, the service's and uvicorn's alike."""
    configure_logging(ServiceConfig(log_format="json", log_level="WARNING"))
    get_logger("ml_production_service.test").info("hidden")
    logging.getLogger("uvicorn.error").info("hidden too")
    get_logger("ml_production_service.test").warning("shown")
    assert [r["event"] for r in _json_lines(capsys.readouterr().err)] == ["shown"]


def test_console_format_is_human_readable(capsys: pytest.CaptureFixture[str]) -> None:
    """With MPS_LOG_FORMAT=console records are plain text lines with the event and its values."""
    configure_logging(ServiceConfig(log_format="console"))
    get_logger("ml_production_service.test").info("model_loaded", model_type="xgboost")
    logging.getLogger("uvicorn.error").info("Started server process")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "model_loaded" in lines[0] and "model_type=xgboost" in lines[0] and "info" in lines[0]
    assert "Started server process" in lines[1]
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


def test_reconfiguring_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Configuring twice (each worker, each test app) still writes each record once."""
    config = ServiceConfig(log_format="json")
    configure_logging(config)
    configure_logging(config)
    logging.getLogger("uvicorn.error").info("once")
    assert len(_json_lines(capsys.readouterr().err)) == 1


def test_format_defaults_to_json_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a container or under a supervisor (no TTY) logs are JSON unless set otherwise."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert resolve_format(ServiceConfig()) is LogFormat.JSON
    assert resolve_format(ServiceConfig(log_format="console")) is LogFormat.CONSOLE


def test_format_defaults_to_console_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer at a terminal gets readable console lines unless JSON is asked for."""

    class _Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert resolve_format(ServiceConfig()) is LogFormat.CONSOLE
    assert resolve_format(ServiceConfig(log_format="json")) is LogFormat.JSON


def _request_fields() -> dict[str, object]:
    return {"request_id": "abc", "method": "POST", "path": "/predict", "status": 200, "latency_ms": 0.5}


def test_log_line_writes_what_the_structlog_chain_writes(capsys: pytest.CaptureFixture[str]) -> None:
    """In JSON, the hot path's line has the chain's keys in the chain's order and the same values (the timestamp
    aside); below the level it writes nothing, and an error line carries level error."""
    configure_logging(ServiceConfig(log_format="json"))
    logger = get_logger("ml_production_service.access")
    logger.info("request", **_request_fields())
    log_line(logger, "ml_production_service.access", "info", "request", _request_fields())
    chain, fast = _json_lines(capsys.readouterr().err)
    assert list(fast) == list(chain) == [*_request_fields(), "event", "level", "timestamp", "logger"]
    assert {**fast, "timestamp": None} == {**chain, "timestamp": None}
    assert str(fast["timestamp"]).endswith("Z") and datetime.fromisoformat(str(fast["timestamp"]))
    log_line(logger, "ml_production_service.access", "error", "request", _request_fields())
    assert _json_lines(capsys.readouterr().err)[0]["level"] == "error"
    configure_logging(ServiceConfig(log_format="json", log_level="WARNING"))
    log_line(logger, "ml_production_service.access", "info", "request", _request_fields())
    assert capsys.readouterr().err == ""


def test_log_line_goes_through_the_chain_for_console_and_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    """The console format, and a line logged while context is bound, take structlog's way: the bound values
    appear in the line."""
    configure_logging(ServiceConfig(log_format="console"))
    log_line(get_logger("x"), "x", "info", "request", _request_fields())
    assert "request" in capsys.readouterr().err
    configure_logging(ServiceConfig(log_format="json"))
    structlog.contextvars.bind_contextvars(trace="t-1")
    try:
        log_line(get_logger("x"), "x", "info", "request", _request_fields())
    finally:
        structlog.contextvars.clear_contextvars()
    [record] = _json_lines(capsys.readouterr().err)
    assert record["trace"] == "t-1" and record["request_id"] == "abc"


def test_log_line_in_a_loop_flushes_after_a_short_delay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a running loop, lines wait in stderr's buffer and reach the file together, LINE_FLUSH_S later; a loop
    that ended with a flush pending does not stop the next loop's lines from being flushed."""
    configure_logging(ServiceConfig(log_format="json"))
    path = tmp_path / "stderr"
    with path.open("wb", buffering=0) as raw:
        monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BufferedWriter(raw)))

        async def two_lines(wait_s: float) -> tuple[int, int]:
            for _ in range(2):
                log_line(get_logger("x"), "x", "info", "request", _request_fields())
            before = len(path.read_bytes())
            await asyncio.sleep(wait_s)
            return before, len(path.read_bytes().splitlines())

        assert asyncio.run(two_lines(LINE_FLUSH_S * 5)) == (0, 2)
        asyncio.run(two_lines(0))  # its loop ends before the flush: the lines wait
        assert asyncio.run(two_lines(LINE_FLUSH_S * 5))[1] == 6
