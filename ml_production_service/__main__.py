"""Run the service: ``python -m ml_production_service`` (what ``make api-run``, ``make serve`` and the image run).

Start-up checks run in this order, each failing with one line before any worker starts: the configuration
(exit 2), the file-descriptor limit for ``MPS_MAX_CONNECTIONS`` (exit 2), the multiprocess metrics folder
(exit 1; created if unset, checked, emptied) and the model (exit 1); the quick checks run before the model's
libraries are even imported. The model's checks run in a short-lived child process (``preflight``) unless this
process will serve a model that needs none of scikit-learn and the original Pipeline: the master of several workers
never imports a model library, and a worker keeps only what it serves.
Then uvicorn serves ``LimitedHttpToolsProtocol`` (``server/protocol.py``) with ``GracefulServer`` (one worker)
or ``GracefulMultiprocess`` (several) from ``server/supervisor.py``.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from contextlib import suppress
from importlib import import_module
from pathlib import Path

from ml_production_service import preflight
from ml_production_service.configs import ConfigError, ServiceConfig, load_config
from ml_production_service.logging import configure_logging, get_logger
from ml_production_service.preflight import PROVEN_ENV, ModelCheckFailed
from ml_production_service.server.protocol import ConnectionLimits, ServerConfig
from ml_production_service.server.supervisor import GracefulMultiprocess, GracefulServer

APP_FACTORY = "ml_production_service.server.app:create_app"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""``ml_production_service.server.metrics.MULTIPROCESS_ENV``. Not imported from there: importing that module
imports prometheus_client, which picks its multiprocess value class from this variable at import time and
writes into the folder as soon as a metric is defined, so the folder is checked before anything imports it."""
MIN_METRICS_FREE_BYTES = 64 * 1024 * 1024
"""Free space the metrics folder needs: the workers mmap their files there, and a write to a full tmpfs kills
the process with SIGBUS (no exception, no log line)."""
FD_MARGIN = 64
"""File descriptors a worker uses besides its connections: listening socket, event loop, pipes, logs, metrics."""


def check_file_limit(max_connections: int) -> str | None:
    """Make room for ``max_connections`` open sockets per worker: raise the soft ``RLIMIT_NOFILE`` up to the
    hard limit if needed; a one-line reason when even that is too low, else None. Workers inherit the limit."""
    needed = max_connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else hard
    if target >= needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # pragma: no cover - macOS refuses a soft limit above OPEN_MAX
            pass
        else:
            return None
    limit = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    return (
        f"MPS_MAX_CONNECTIONS={max_connections} needs {needed} file descriptors per worker "
        f"(connections + {FD_MARGIN}), but the open-files limit is {soft} (hard limit {limit}): "
        "raise it (ulimit -n, the container's nofile ulimit) or lower MPS_MAX_CONNECTIONS"
    )


def check_metrics_folder(folder: Path, min_free_bytes: int = MIN_METRICS_FREE_BYTES) -> str | None:
    """What makes ``folder`` unusable for the multiprocess metrics files, or None if it is usable."""
    if not folder.is_dir():
        return "does not exist" if not folder.exists() else "is not a directory"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return f"is not writable ({error.strerror or error})"
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < min_free_bytes:
        return f"has {free / 2**20:.1f} MiB free, at least {min_free_bytes / 2**20:.0f} MiB needed"
    return None  # (no free inodes fails the write above)


def uses_multiprocess_metrics(config: ServiceConfig) -> bool:
    """Whether the workers will write their metrics to files (several workers, or the variable set by hand)."""
    return config.workers > 1 or bool(os.environ.get(MULTIPROCESS_ENV))


def prepare_multiprocess_metrics() -> tuple[str, str | None]:
    """Give the workers one empty folder to share metrics through (checked first; before any worker starts).

    Returns the folder and what is wrong with it (None when it is usable). Stale ``*.db`` files of an earlier
    run are removed only from a usable folder.
    """
    folder = os.environ.get(MULTIPROCESS_ENV)
    if not folder:
        try:
            folder = tempfile.mkdtemp(prefix="mps-metrics-")
        except OSError as error:
            return tempfile.tempdir or "the temporary folder", f"cannot create a metrics folder here ({error})"
        os.environ[MULTIPROCESS_ENV] = folder
    problem = check_metrics_folder(Path(folder))
    if problem is None:
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    return folder, problem


def server_config(config: ServiceConfig) -> ServerConfig:
    """uvicorn's configuration for the service's settings."""
    return ServerConfig(
        APP_FACTORY,
        limits=ConnectionLimits.from_config(config),
        timeout_keep_alive=config.keep_alive_timeout_s,
        timeout_graceful_shutdown=config.graceful_timeout_s,
        factory=True,
        host=config.api_host,
        port=config.api_port,
        workers=config.workers,
        log_config=None,
        access_log=False,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        server_header=False,
    )


def serve(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT, as ``uvicorn.run`` would, with the graceful server and supervisor."""
    if config.workers > 1:
        socket = config.bind_socket()
        GracefulMultiprocess(config, sockets=[socket]).run()
        return 0
    # A socket or lifespan failure exits with uvicorn's STARTUP_FAILURE (3) from inside run().
    with suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it caught once it has shut down
        GracefulServer(config).run()
    return 0


SERVING_MODULES = (APP_FACTORY.split(":")[0], "ml_production_service.fast_path")
"""What a process serving a fitted model imports: the app, and ONNX Runtime with the fast path."""


def import_serving_modules() -> None:
    """Import ``SERVING_MODULES`` (what uvicorn and the lifespan would import next anyway)."""
    for name in SERVING_MODULES:
        import_module(name)


def check_model(config: ServiceConfig, command: list[str] | None = None) -> str | None:
    """Every check of the model, where it costs the serving processes nothing: in a short-lived process when the
    checks need libraries the server will not keep (the parity of a fast path with its original Pipeline) or when
    this process serves nothing (the master of several workers); otherwise here, where the model serves anyway.
    Its proof (``preflight.check_model``, run as ``command``), or ModelCheckFailed with the one-line reason."""
    if config.workers > 1:
        return preflight.check_model(config, command)
    if config.model_type.is_fitted and config.fast_path:
        # This process will serve: it imports the app and ONNX Runtime while the check process works.
        return preflight.check_model(config, command, meanwhile=import_serving_modules)
    # Imported here: the checks before this one fail in a second, before the model's libraries load.
    from ml_production_service.factory import get_predictor
    from ml_production_service.predictors.base import ModelLoadError

    try:
        get_predictor(config)
    except ModelLoadError as error:
        raise ModelCheckFailed(str(error)) from error
    return None


def main() -> int:
    """Check the configuration, limits, model and metrics folder, then serve; non-zero exit on a bad start."""
    try:
        config = load_config()
    except ConfigError as error:
        print(error, file=sys.stderr)  # noqa: T201 - logging is not configured without a valid config
        return 2
    configure_logging(config)
    logger = get_logger("ml_production_service.main")
    problem = check_file_limit(config.max_connections)
    if problem is not None:
        logger.error("startup_failed", error=problem)
        return 2
    if uses_multiprocess_metrics(config):
        folder, problem = prepare_multiprocess_metrics()
        if problem is not None:
            logger.error("startup_failed", folder=folder, error=f"{MULTIPROCESS_ENV} {folder} {problem}")
            return 1
    try:
        # Fail fast, once, with one line, before any worker process starts.
        proven = check_model(config)
    except ModelCheckFailed as error:
        logger.error("startup_failed", model_type=config.model_type.value, error=str(error))
        return 1
    if proven is not None:
        os.environ[PROVEN_ENV] = proven  # the serving processes (this one, or the workers it spawns) read it
    logger.info(
        "starting",
        model_type=config.model_type.value,
        host=config.api_host,
        port=config.api_port,
        workers=config.workers,
        max_connections=config.max_connections,
    )
    return serve(server_config(config))


if __name__ == "__main__":
    sys.exit(main())
