"""The FastAPI application: ``create_app(config)`` with a lifespan that loads and warms the model."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ml_production_service import __version__
from ml_production_service.configs import ServiceConfig, get_config
from ml_production_service.factory import get_predictor
from ml_production_service.guard import (
    ClientAddresses,
    KeyRing,
    RateLimiter,
    load_keys,
    parse_networks,
    parse_rate_limit,
    storage_uri,
)
from ml_production_service.logging import configure_logging, get_logger
from ml_production_service.server import docs
from ml_production_service.server.access import AccessMiddleware
from ml_production_service.server.dataplane import DataPlane, Guard
from ml_production_service.server.errors import ApiError, details_from, error_response, summary
from ml_production_service.server.lifecycle import SHUTDOWN
from ml_production_service.server.metrics import observe_model
from ml_production_service.server.middleware import RequestContextMiddleware
from ml_production_service.server.monitoring import observe_refused
from ml_production_service.server.openapi import INFERENCE_REQUEST, pin_path_values
from ml_production_service.server.routes import health, metrics, model, predict, v2
from ml_production_service.server.schemas import SETOSA_EXAMPLE, BatchRequest, IrisFeatures

logger = get_logger("ml_production_service.app")
DOCUMENTED_BODIES = (IrisFeatures, BatchRequest)


def _request_id(request: Request) -> str | None:
    request_id: str | None = request.scope.get("state", {}).get("request_id")
    return request_id


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    if error.status in (400, 422):
        observe_refused(error.details)
    return error_response(error, _request_id(request))


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    api_error = ApiError(error.status_code, code, f"{request.method} {request.url.path}: {error.detail}")
    return error_response(api_error, _request_id(request), headers=dict(error.headers or {}))


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    errors = list(error.errors())
    details = details_from(errors)
    observe_refused(details)
    return error_response(
        ApiError(
            422,
            "validation_error",
            f"request validation failed: {summary(details, len(errors))}",
            details,
            total_details=len(errors),
        ),
        _request_id(request),
    )


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error,
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the configured predictor once, warm it, decide inline vs thread, then serve."""
    config: ServiceConfig = app.state.config
    started = time.perf_counter()
    predictor = get_predictor(config)
    load_seconds = time.perf_counter() - started
    warm_row = IrisFeatures.model_validate(SETOSA_EXAMPLE).to_row()
    warmup_us = predictor.warm_up(warm_row)
    inline = warmup_us <= config.inline_predict_max_us
    app.state.data_plane = DataPlane(predictor, inline, warmup_us, config.max_batch_size, app.state.guard)
    app.state.model_info.update(model_type=predictor.model_type, model_version=predictor.version)
    observe_model(predictor.model_type, predictor.version, predictor.manifest.sha256, load_seconds)
    # The model, its libraries and the app are loaded for good: move them out of the collector's reach, so that a
    # full collection (measured at 75-130 ms under load) does not scan them in the middle of a request; and start
    # the thread pool now rather than in the first request that needs it (the scrape route, a slow model).
    gc.collect()
    gc.freeze()
    await run_in_threadpool(lambda: None)
    app.state.ready = True
    logger.info(
        "model_loaded",
        model_type=predictor.model_type,
        model_version=predictor.version,
        sha256=predictor.manifest.sha256,
        load_ms=round(load_seconds * 1000, 3),
        predict_p50_us=round(warmup_us, 1),
        runs_inline=inline,
    )
    try:
        yield
    finally:
        gc.unfreeze()  # back in the collector's care (an app in a test process is not the process's last)
        app.state.ready = False
        app.state.data_plane.monitor.flush()
        logger.info("shutting_down", model_type=predictor.model_type)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with the request bodies the routes validate themselves."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, definitions = models_json_schema(
            [(body, "validation") for body in DOCUMENTED_BODIES], ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(definitions.get("$defs", {}))
        components["InferenceRequest"] = INFERENCE_REQUEST
        plane: DataPlane | None = getattr(app.state, "data_plane", None)
        if plane is None:
            return schema  # before the model is loaded: no path values to pin yet, and nothing cached
        pin_path_values(schema, plane.model_type, plane.version)
        app.openapi_schema = schema
    return app.openapi_schema


def _guard(config: ServiceConfig) -> Guard:
    limiter = None
    if config.rate_limit is not None:
        limiter = RateLimiter(parse_rate_limit(config.rate_limit), storage_uri(config.rate_limit_storage))
    return Guard(
        limiter,
        config.rate_limit_fail_open,
        config.request_timeout_s,
        config.payload_log_sample,
        config.payload_log_path,
    )


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """Build the service for ``config`` (default: the environment's ``MPS_*`` variables)."""
    config = config or get_config()
    configure_logging(config)
    app = FastAPI(
        title="ML Production Service",
        version=__version__,
        description="Iris classification behind one interface: heuristic, decision tree, random forest, XGBoost.",
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        # Metrics are Prometheus, logs structlog; FastAPI's OpenTelemetry hooks would only cost a check per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # FastAPI's pages load Swagger UI and ReDoc from a CDN: see server/docs.py
        redoc_url=None,
    )
    app.state.config = config
    SHUTDOWN.reset()  # a new app serves; a SIGTERM that arrives while its model loads must not be undone
    app.state.ready = False
    app.state.model_info = {"model_type": config.model_type.value, "model_version": None}
    app.state.guard = _guard(config)
    keyring = KeyRing(load_keys(config.api_keys_file)) if config.api_keys_file is not None else None
    if keyring is not None or app.state.guard.limiter is not None:  # both off: not even a pass-through layer
        app.add_middleware(
            AccessMiddleware,
            keyring=keyring,
            addresses=ClientAddresses(parse_networks(config.trusted_proxies)),
            protect_ops=config.auth_protect_ops,
        )
    app.add_middleware(  # added last, so outermost: the request id and the log line cover the access checks too
        RequestContextMiddleware,
        max_body_bytes=config.max_body_bytes,
        body_timeout_s=config.body_timeout_s,
        model_info=app.state.model_info,
    )
    for router in (predict.router, v2.router, health.router, model.router, metrics.router):  # hot routes first
        # The routers' own routes, not include_router: FastAPI 0.16x keeps an included router as a layer that every
        # request walks twice (match, then handle). The routers have no prefix, dependency or setting to add to
        # their routes (the routes already carry the router's prefix and responses): same routes, same schema.
        app.router.routes.extend(router.routes)
    if config.docs_enabled:
        docs.add_docs(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
