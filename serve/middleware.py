"""The ASGI layer in front of the routes: shutdown refusals, the body-size limit, dropped clients, metrics.

:class:`Guard` wraps the FastAPI app. For every HTTP request it

- answers 503 with ``Retry-After`` while the server drains (``/health`` still answers, with 503);
- reads the body itself, refusing it with 413 once it passes ``max_body_bytes`` (a ``Content-Length``
  over the limit is refused before a byte is read), so nothing oversized is parsed;
- runs the app while listening for the client's disconnect: a client that goes away before its answer
  cancels its request (its job is skipped if the model has not reached it), recorded as status 499;
- counts the request in flight and records its status and latency in :class:`~attnsift.serve.metrics.Metrics`.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: paths recorded under their own name in the metrics (anything else: "other", so labels stay few)
KNOWN_PATHS = ("/v1/rerank", "/v2/rerank", "/rerank", "/v1/search", "/health", "/metrics", "/docs", "/openapi.json")
#: paths that stay open while draining (a load balancer reads the 503 there)
OPEN_WHILE_DRAINING = ("/health", "/metrics")
CLIENT_CLOSED = 499  # the client went away before its answer (nginx's convention)


def endpoint_label(path: str) -> str:
    return path if path in KNOWN_PATHS else "other"


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def error_body(message: str) -> dict[str, str]:
    """Every error answer: ``message`` (one line) and ``detail`` (FastAPI's key; the same line here)."""
    return {"message": message, "detail": message}


class _BodyTooLarge(Exception):
    def __init__(self, size: int | None) -> None:
        self.size = size


class _ClientGone(Exception):
    pass


class Guard:
    """ASGI middleware (see the module docstring). ``state`` is the app's :class:`~attnsift.serve.app.ServeState`."""

    def __init__(self, app: Callable, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = self.state
        endpoint = endpoint_label(scope["path"])
        t0 = time.perf_counter()
        status = [500]
        started = [False]

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        st.in_flight += 1
        try:
            await self._handle(scope, receive, tracked_send, started, status)
        finally:
            st.in_flight -= 1
            st.metrics.observe_request(endpoint, status[0], time.perf_counter() - t0)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, started: list, status: list) -> None:
        st = self.state
        if st.draining and scope["path"] not in OPEN_WHILE_DRAINING:
            await send_json(send, 503, error_body("the server is shutting down; retry later or on another replica"),
                            {"Retry-After": str(st.limits.retry_after_s), "Connection": "close"})
            return
        try:
            body = await self._read_body(scope, receive)
        except _BodyTooLarge as exc:
            limit = st.limits.max_body_bytes
            size = f"{exc.size} bytes" if exc.size is not None else f"over {limit} bytes"
            await send_json(send, 413, error_body(f"the request body is {size}; this server takes at most {limit} "
                                                  "bytes (--max-body-bytes): send fewer or shorter documents"),
                            {"Connection": "close"})
            return
        except _ClientGone:
            status[0] = CLIENT_CLOSED
            return
        await self._run(scope, receive, send, body, started, status)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.state.limits.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    continue
                if declared > limit:
                    raise _BodyTooLarge(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge(None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _run(self, scope: Scope, receive: Receive, send: Send, body: bytes, started: list, status: list) -> None:
        gone = asyncio.Event()
        replayed = [False]

        async def replay() -> Message:
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        app_task = asyncio.ensure_future(self.app(scope, replay, send))
        watch = asyncio.ensure_future(self._watch(receive, gone))
        try:
            await asyncio.wait({app_task, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not app_task.done() and gone.is_set() and not started[0]:
                # The client went away before its answer: stop its work (a queued job is skipped).
                app_task.cancel()
                status[0] = CLIENT_CLOSED
                try:
                    await app_task
                except asyncio.CancelledError:
                    pass
                return
            await app_task
        except asyncio.CancelledError:
            app_task.cancel()
            status[0] = CLIENT_CLOSED
            raise
        finally:
            watch.cancel()

    @staticmethod
    async def _watch(receive: Receive, gone: asyncio.Event) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return
