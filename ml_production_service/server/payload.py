"""A sampled log of served rows (inputs, prediction, probabilities): the input of ``make drift-report``.

It holds request data: off by default (``MPS_PAYLOAD_LOG_SAMPLE=0``). Each sampled row is one JSON line written
with one ``write`` to a file opened for appending (several workers may share it), or to stderr.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from ml_production_service.features import FEATURE_NAMES, FloatArray


class PayloadLog:
    """Writes a ``payload`` line for a sampled fraction of the served rows."""

    def __init__(self, sample: float, path: Path | None, model_type: str, model_version: str) -> None:
        self.sample = sample
        self.model_type = model_type
        self.model_version = model_version
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self.fd = os.open(path, flags, 0o600) if path is not None else sys.stderr.fileno()
        self.random = random.Random()  # noqa: S311 - sampling, not security

    def record(
        self, request_id: str | None, rows: FloatArray, labels: Sequence[str], probabilities: Sequence[dict[str, float]]
    ) -> None:
        """Log each row with probability ``sample``."""
        for index in range(len(rows)):
            if self.random.random() >= self.sample:
                continue
            line = {
                "event": "payload",
                "ts": datetime.now(UTC).isoformat(),
                "request_id": request_id,
                "model_type": self.model_type,
                "model_version": self.model_version,
                "inputs": dict(zip(FEATURE_NAMES, rows[index].tolist(), strict=True)),
                "prediction": labels[index],
                "probabilities": probabilities[index],
            }
            os.write(self.fd, orjson.dumps(line) + b"\n")
