"""Structured logging: structlog for the service, the standard library (uvicorn included) routed through it."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from ml_production_service.configs import LogFormat, ServiceConfig

ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "gunicorn", "gunicorn.error")
SILENCED_LOGGERS = ("uvicorn.access", "gunicorn.access")
"""The servers' own access lines are replaced by the service's one canonical line per request."""


def _orjson_dumps(event: Any, default: Any) -> str:
    return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def resolve_format(config: ServiceConfig) -> LogFormat:
    """The configured format, or console on a terminal and JSON elsewhere."""
    if config.log_format is not None:
        return config.log_format
    return LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON


def configure_logging(config: ServiceConfig) -> None:
    """Send every record, ours and uvicorn's, to stderr in one format at ``config.log_level``."""
    level = logging.getLevelNamesMapping()[config.log_level]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if resolve_format(config) is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers[:] = []
        routed.propagate = True
        routed.setLevel(level)
    for name in SILENCED_LOGGERS:
        silenced = logging.getLogger(name)
        silenced.handlers[:] = []
        silenced.propagate = False

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.stdlib.get_logger(name)
