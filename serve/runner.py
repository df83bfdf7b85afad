"""Running the app under uvicorn, with a graceful shutdown: :func:`make_server`, :func:`serve`.

On SIGTERM or Ctrl-C the server first drains: new requests are answered 503 (``/health`` too, so a
load balancer stops sending), requests accepted already finish (at most ``grace_s`` seconds), then
uvicorn closes the listener and stops. A second Ctrl-C stops at once.
"""
from __future__ import annotations

import logging
import time
from types import FrameType
from typing import Any, Callable

log = logging.getLogger(__name__)


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError("attnsift serve needs FastAPI and uvicorn: pip install 'attnsift[serve]'") from exc
    return uvicorn


def make_server(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
                access_log: bool = False, on_ready: Callable[[str], None] | None = None) -> Any:
    """A uvicorn server for ``app`` (from :func:`attnsift.serve.app.create_app`) that drains before it stops.

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0: a free port, see ``server.url`` once started).
    log_level, access_log
        uvicorn's logging (one line per request with ``access_log=True``).
    on_ready : callable, optional
        Called with the server's URL once it listens.

    Returns
    -------
    DrainingServer
        ``run()`` blocks until the server stops; ``begin_shutdown()`` is what a signal does.
    """
    uvicorn = _uvicorn()
    state = app.state.attnsift

    class DrainingServer(uvicorn.Server):
        """uvicorn's server; a stop signal first drains the app (see the module docstring)."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.drain_started: float | None = None
            self.url: str | None = None

        def begin_shutdown(self) -> None:
            """Start the graceful shutdown (thread- and signal-safe: it sets flags)."""
            if self.drain_started is None:
                self.drain_started = time.monotonic()
                state.begin_drain()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.drain_started is None:
                log.warning("shutting down: finishing %d request(s) in flight, refusing new ones (503)",
                            state.in_flight)
                self.begin_shutdown()
                return
            super().handle_exit(sig, frame)  # a second signal: uvicorn's own (Ctrl-C twice: at once)

        async def on_tick(self, counter: int) -> bool:
            if self.drain_started is not None and not self.should_exit:
                if state.idle or time.monotonic() - self.drain_started > state.limits.grace_s:
                    self.should_exit = True
            return await super().on_tick(counter)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.servers and self.servers[0].sockets:
                bound = self.servers[0].sockets[0].getsockname()
                self.url = f"http://{_url_host(bound[0])}:{bound[1]}"
                if on_ready is not None:
                    on_ready(self.url)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=max(1, int(state.limits.grace_s)))
    return DrainingServer(config)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
          access_log: bool = False, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until a stop signal, then drain and stop (see :func:`make_server`)."""
    make_server(app, host=host, port=port, log_level=log_level, access_log=access_log, on_ready=on_ready).run()
