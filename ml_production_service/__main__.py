"""Run the service: ``python -m ml_production_service`` (what ``make api-run``, ``make serve`` and the image run)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import uvicorn

from ml_production_service.configs import ConfigError, load_config
from ml_production_service.factory import get_predictor
from ml_production_service.logging import configure_logging, get_logger
from ml_production_service.predictors.base import ModelLoadError
from ml_production_service.server.metrics import MULTIPROCESS_ENV

APP_FACTORY = "ml_production_service.server.app:create_app"


def prepare_multiprocess_metrics() -> None:
    """Give the workers one empty folder to share metrics through (set before any worker starts)."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder:
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="mps-metrics-")


def main() -> int:
    """Check the configuration and the model, then serve with uvicorn; non-zero exit on a bad start."""
    try:
        config = load_config()
    except ConfigError as error:
        print(error, file=sys.stderr)  # noqa: T201 - logging is not configured without a valid config
        return 2
    configure_logging(config)
    logger = get_logger("ml_production_service.main")
    try:
        # Fail fast, once, with one line, before any worker process starts.
        get_predictor(config)
    except ModelLoadError as error:
        logger.error("startup_failed", model_type=config.model_type.value, error=str(error))
        return 1
    if config.workers > 1:
        prepare_multiprocess_metrics()
    logger.info(
        "starting",
        model_type=config.model_type.value,
        host=config.api_host,
        port=config.api_port,
        workers=config.workers,
    )
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=config.api_host,
        port=config.api_port,
        workers=config.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(config.graceful_timeout_s),
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
