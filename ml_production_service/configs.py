"""Service configuration: one settings class, read from ``MPS_*`` environment variables."""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MPS_"
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY_DIR = REPOSITORY_ROOT / "registry" / "prd"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which container cpusets set), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1  # pragma: no cover - platforms without affinity masks (macOS)


class ModelType(StrEnum):
    """The predictors the service can serve, chosen by ``MPS_MODEL_TYPE``."""

    HEURISTIC = "heuristic"
    DECISION_TREE = "decision_tree"
    RANDOM_FOREST = "random_forest"
    XGBOOST = "xgboost"

    @property
    def is_fitted(self) -> bool:
        """Whether this model learns from data and is served from an artifact (everything but the heuristic)."""
        return self is not ModelType.HEURISTIC


class LogFormat(StrEnum):
    """How log records are rendered."""

    JSON = "json"
    CONSOLE = "console"


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class ServiceConfig(BaseSettings):
    """Every setting of the service; each field is read from ``MPS_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        protected_namespaces=(),
    )

    model_type: ModelType = ModelType.HEURISTIC
    """Which predictor serves requests."""

    log_level: LogLevel = "INFO"
    """Minimum level of the records that are written."""

    log_format: LogFormat | None = None
    """``json`` or ``console``; unset means console on a terminal, JSON otherwise."""

    api_host: str = "0.0.0.0"  # noqa: S104 - a container must listen on every interface
    """Interface the HTTP server binds to."""

    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """TCP port the HTTP server listens on."""

    workers: Annotated[int, Field(ge=1, le=1024)] = Field(default_factory=lambda: available_cpus())
    """Number of server worker processes (each loads the model once); default: the CPUs this process may use."""

    registry_dir: Path = DEFAULT_REGISTRY_DIR
    """Folder holding the promoted models (one sub-folder per model type)."""

    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest request body accepted; a larger one is answered 413."""

    max_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Most rows one batch request may carry."""

    allow_version_mismatch: bool = False
    """Serve an artifact trained with other library versions than the installed ones."""

    fast_path: bool = True
    """Serve fitted models through their parity-checked ONNX fast path; false serves the joblib Pipeline."""

    inline_predict_max_us: Annotated[float, Field(ge=0)] = 100.0
    """Predictions faster than this (measured at start-up) run on the event loop, slower ones in a thread."""

    graceful_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Seconds in-flight requests get to finish after SIGTERM."""

    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    """Largest request line plus headers; a larger request is answered 431 and its connection closed."""

    header_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """Seconds a connection may take to send a request's line and headers (slow-header clients are cut)."""

    body_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """Seconds a request may take to send its whole body; slower (or a body shorter than declared) is 408."""

    keep_alive_timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    """Seconds an idle keep-alive connection is kept open between requests."""

    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Open connections one worker accepts; past it a new connection is answered 503 and closed."""

    api_keys_file: Path | None = None
    """File of ``key_id:sha256-hex-of-key`` lines; set, every route but the open ones needs a key (401 without)."""

    auth_protect_ops: bool = False
    """Also require a key on ``/health/*``, ``/v2/health/*`` and ``/metrics`` (open by default, for probes)."""

    rate_limit: str | None = None
    """Per-client limits in the ``limits`` syntax, e.g. ``100/second;5000/minute``; a batch costs its rows."""

    rate_limit_storage: str = "memory://"
    """Where the limiter counts: ``memory://`` (per worker process) or ``redis://host:port/db`` (shared)."""

    rate_limit_fail_open: bool = True
    """When the limiter's storage does not answer: serve anyway (true) or answer 503 (false); counted either way."""

    trusted_proxies: str = ""
    """Comma-separated addresses or CIDR blocks whose ``X-Forwarded-For`` names the client (e.g. the router)."""

    max_in_flight: Annotated[int, Field(ge=0, le=100_000)] = 128
    """Requests one worker holds at once; past it a prediction is answered 503 before its body is read (0: off)."""

    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """Seconds a model call running in a thread may take; then 504 (the thread's late result is dropped)."""

    payload_log_sample: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Fraction of served rows written to the payload log (inputs, prediction, probabilities): request data."""

    payload_log_path: Path | None = None
    """File the payload log is appended to (mode 0600); unset: stderr, among the other log lines."""

    docs_enabled: bool = True
    """Serve the interactive docs at ``/docs`` (Swagger UI, its assets served locally); the schema stays at
    ``/openapi.json`` either way."""

    @field_validator("api_keys_file", "rate_limit", "payload_log_path", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        # A variable set to nothing (as a ConfigMap may) turns the feature off rather than naming ".".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys_file")
    @classmethod
    def _readable_keys(cls, value: Path | None) -> Path | None:
        if value is not None:
            from ml_production_service.guard import load_keys  # the guard's libraries load only when it is on

            load_keys(value)  # a KeyFileError names the file and the line
        return value

    @field_validator("rate_limit")
    @classmethod
    def _parsable_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from ml_production_service.guard import parse_rate_limit

            parse_rate_limit(value)
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        from ml_production_service.guard import storage_uri

        storage_uri(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        from ml_production_service.guard import parse_networks

        parse_networks(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        # Accept any case, but leave an invalid value as typed so the error shows what the user set.
        if isinstance(value, str) and value.upper() in logging.getLevelNamesMapping():
            return value.upper()
        return value


class ConfigError(ValueError):
    """A setting has a value the service cannot run with; the message is one line."""


def describe_validation_error(error: ValidationError) -> str:
    """Turn a settings validation error into one line naming variable, value and rule."""
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = f"{ENV_PREFIX}{field.upper()}"
        allowed = _allowed_values(field)
        rule = item["msg"] if allowed is None else f"allowed values: {allowed}"
        parts.append(f"{variable}={item.get('input')!r} is invalid ({rule})")
    return "invalid configuration: " + "; ".join(parts)


def _allowed_values(field: str) -> str | None:
    choices = {
        "model_type": ", ".join(m.value for m in ModelType),
        "log_format": ", ".join(f.value for f in LogFormat),
        "log_level": "DEBUG, INFO, WARNING, ERROR, CRITICAL",
    }
    return choices.get(field)


def load_config() -> ServiceConfig:
    """Read the configuration from the environment; raise ConfigError with a one-line message."""
    try:
        return ServiceConfig()
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


@lru_cache(maxsize=1)
def get_config() -> ServiceConfig:
    """The process-wide configuration, read once."""
    return load_config()
