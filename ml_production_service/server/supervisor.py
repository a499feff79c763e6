"""The server and supervisor that run ``LimitedHttpToolsProtocol``: readiness 503 and the drain at SIGTERM.

uvicorn notices SIGTERM on its next tick (up to 0.1 s later; its multi-worker supervisor, up to 0.5 s) and then
closes every idle connection in the same instant. ``GracefulServer`` turns readiness 503 in the signal handler
and starts each connection's drain (``LimitedHttpToolsProtocol.shutdown``) on the next loop pass;
``GracefulMultiprocess`` runs ``GracefulServer`` in every worker and passes SIGTERM on at once.

Like ``protocol.py``, this module must not import ``prometheus_client``: the supervisor process imports it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from contextlib import suppress
from types import FrameType

import uvicorn
from uvicorn.supervisors import multiprocess

from ml_production_service.server.lifecycle import SHUTDOWN


class GracefulServer(uvicorn.Server):
    """uvicorn's server whose SIGTERM/SIGINT turns readiness 503 and starts draining connections at once."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not SHUTDOWN.draining:
            SHUTDOWN.begin()
            with suppress(RuntimeError):  # no loop running yet: nothing to drain
                asyncio.get_running_loop().call_soon_threadsafe(self.drain_connections)
        super().handle_exit(sig, frame)

    def drain_connections(self) -> None:
        """Start every open connection's drain (uvicorn's shutdown calls it again; it runs once)."""
        for connection in list(self.server_state.connections):
            connection.shutdown()


class GracefulProcess(multiprocess.Process):
    """A uvicorn worker process that serves with ``GracefulServer``."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GracefulServer(config=self.config)
        return self._server


class GracefulMultiprocess(multiprocess.Multiprocess):
    """uvicorn's supervisor with ``GracefulProcess`` workers, which get SIGTERM the moment the supervisor does.

    uvicorn's supervisor handles signals on a 0.5 s poll; readiness must not wait for it.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        signal.signal(signal.SIGTERM, self.forward_sigterm)

    def forward_sigterm(self, sig: int, _frame: FrameType | None) -> None:
        """Queue SIGTERM for the supervisor's loop (as uvicorn does) and pass it on to every worker now."""
        self.signal_queue.append(sig)
        for process in self.processes:
            if process.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def run(self) -> None:
        # uvicorn's supervisor creates workers as `Process(...)` in four places (start, crash, SIGHUP, SIGTTIN):
        # point that name at GracefulProcess while it runs rather than copying those methods.
        original = multiprocess.Process
        multiprocess.Process = GracefulProcess  # type: ignore[misc]
        try:
            super().run()
        finally:
            multiprocess.Process = original  # type: ignore[misc]
