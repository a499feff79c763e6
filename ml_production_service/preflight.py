"""The model's start-up checks in a short-lived process: the server command never holds a model it does not serve.

``python -m ml_production_service`` runs ``check_model`` before any worker starts: a child process loads the model
with every check (integrity, library versions, golden predictions, the fast path's parity with the original) and
exits, taking scikit-learn, XGBoost and the original Pipeline with it. It answers the ``proof`` of what it proved
(``factory.proof``), which the server command hands its serving processes in ``PROVEN_ENV``.

This module imports nothing of the model's: the server command (the master of several workers) imports it.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_production_service.configs import ServiceConfig

PROVEN_ENV = "ML_PRODUCTION_SERVICE_PROVEN"
"""Set by the server command for its serving processes: the ``proof`` of the fitted model whose fast path's parity
its check process has just proven. Not an ``MPS_*`` setting: nobody sets it by hand."""
COMMAND = [sys.executable, "-m", "ml_production_service.preflight"]
"""The check process: a fresh interpreter (a subprocess, not ``multiprocessing``, whose spawn would also start a
resource tracker that stays for good), given the configuration on stdin, answering one JSON line on stdout."""


class ModelCheckFailed(RuntimeError):
    """The model failed a start-up check (the message is the check's one line) or the check process died."""


def check_model(
    config: ServiceConfig, command: list[str] | None = None, meanwhile: Callable[[], object] | None = None
) -> str | None:
    """Run ``factory.verify_model(config)`` in a short-lived process (``command``, default ``COMMAND``), calling
    ``meanwhile()`` here while it works; its proof, or ModelCheckFailed with its reason.

    What the check process writes on stderr (a library's warning, a crash's traceback) passes through.
    """
    with subprocess.Popen(command or COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:  # noqa: S603
        assert process.stdin is not None and process.stdout is not None
        with suppress(BrokenPipeError):  # a command that does not read it: its exit says what happened
            process.stdin.write(pickle.dumps(config))  # a few kB: within the pipe's buffer, never blocks
            process.stdin.close()
        if meanwhile is not None:
            meanwhile()
        output = process.stdout.read()
    try:
        failed, answer = json.loads(output.splitlines()[-1])
    except (IndexError, ValueError):
        raise ModelCheckFailed(
            f"the model check process exited with code {process.returncode} before answering"
        ) from None
    if failed:
        raise ModelCheckFailed(str(answer))
    return None if answer is None else str(answer)


def main() -> int:
    """In the check process: verify the model of the pickled configuration on stdin; answer [failed, proof or
    one-line reason] on stdout."""
    from ml_production_service.factory import verify_model
    from ml_production_service.predictors.base import ModelLoadError

    config = pickle.load(sys.stdin.buffer)  # noqa: S301 - written by the server command that started this process
    try:
        answer = [False, verify_model(config)]
    except ModelLoadError as error:
        answer = [True, str(error)]
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
