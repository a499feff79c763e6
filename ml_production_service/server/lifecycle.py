"""Process-wide shutdown state: set by the server when SIGTERM arrives, read by readiness and the protocol.

Readiness must turn 503 the moment a worker is told to stop, before uvicorn's own shutdown (which runs the
lifespan's exit only after the connections have drained) gets to it.
"""

from __future__ import annotations


class ShutdownState:
    """Whether this worker has been told to stop."""

    __slots__ = ("draining",)

    def __init__(self) -> None:
        self.draining = False

    def begin(self) -> None:
        """Stop taking new work: readiness answers 503 and every answer closes its connection."""
        self.draining = True

    def reset(self) -> None:
        """Back to serving (a new app in the same process, as tests build them)."""
        self.draining = False


SHUTDOWN = ShutdownState()
