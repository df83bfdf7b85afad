"""Micro-batching: concurrent requests queue up, one worker runs them on the model a batch at a time.

The event loop only queues and waits; the model runs in a worker thread (:func:`attnsift.concurrency.in_thread`,
holding the model's lock, so one batch runs at a time and other users of the same reranker take turns
with the server). The worker takes the first waiting job, then whatever else is queued, up to
``max_batch``, waiting at most ``batch_wait_ms`` for more; while the model is busy, requests pile up in
the queue and the next batch takes them together. A batch is one trip to the worker thread and one
hold of the model's lock; inside it the jobs run one after another (attnsift's rerankers score one
ranking per forward pass), and each caller is answered as soon as its own job is done, not at the end
of the batch.

The queue is bounded: a job that finds it full is refused at once (:class:`QueueFull`, the server's 503).
A caller that stops waiting (its timeout, a client that went away) marks its job abandoned: the worker
skips it if its batch has not reached it yet.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from attnsift.concurrency import in_thread

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``queue_size`` jobs already."""


class Closed(Exception):
    """The batcher is shutting down and takes no new jobs."""


class JobTimeout(Exception):
    """The job did not finish within its timeout."""


@dataclass(eq=False)
class Job:
    """One request's work: ``fn()`` runs in the worker thread; its result resolves ``future``."""

    fn: Callable[[], Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    abandoned: bool = False  # set on the loop; read by the worker thread before it starts the job
    batch_size: int = 0
    queue_seconds: float = 0.0
    run_seconds: float = 0.0


_SKIPPED = object()


class MicroBatcher:
    """A bounded queue and one worker that runs jobs in batches in a worker thread.

    Parameters
    ----------
    lock : threading.Lock, optional
        Held while a batch runs (the model's :func:`attnsift.concurrency.shared_lock`).
    max_batch, queue_size : int
        Jobs per batch; jobs waiting at most (more: :class:`QueueFull`).
    batch_wait_ms : float
        After the first job of a batch, how long to wait for more.
    on_batch : callable, optional
        ``on_batch(size, queue_waits)`` after each batch (metrics), on the event loop.
    """

    def __init__(self, lock: threading.Lock | None, *, max_batch: int = 8, queue_size: int = 64,
                 batch_wait_ms: float = 2.0, on_batch: Callable[[int, list[float]], None] | None = None) -> None:
        self.lock = lock
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.on_batch = on_batch
        self.closed = False
        self.running = 0  # jobs of the batch on the model now
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None

    # ------------------------------------------------------------------ state
    @property
    def depth(self) -> int:
        """Jobs waiting in the queue (not yet on the model)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def idle(self) -> bool:
        return self.depth == 0 and self.running == 0

    def start(self) -> None:
        """Start the worker on the running loop (done on the first :meth:`submit` too)."""
        if self._worker is None or self._worker.done():
            if self._queue is None:
                self._queue = asyncio.Queue(self.queue_size)
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="attnsift-batcher")

    async def close(self, grace_s: float) -> None:
        """Take no new jobs; let the queued ones run (up to ``grace_s`` seconds), then stop the worker."""
        self.closed = True
        deadline = time.monotonic() + grace_s
        while not self.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    # ------------------------------------------------------------------ callers
    async def submit(self, fn: Callable[[], Any], timeout_s: float) -> Job:
        """Queue ``fn`` and wait for it; the finished :class:`Job` (its result or error in ``job.future``).

        Raises
        ------
        Closed
            The batcher is shutting down (or stopped before the job ran).
        QueueFull
            ``queue_size`` jobs are waiting already.
        JobTimeout
            Not finished within ``timeout_s`` (the job is abandoned: skipped if it has not started).
        asyncio.CancelledError
            The caller was cancelled (the job is abandoned likewise).
        """
        if self.closed:
            raise Closed()
        self.start()
        assert self._queue is not None
        job = Job(fn, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull() from None
        try:
            # asyncio.wait neither raises the job's error (the caller reads it from job.future) nor
            # cancels the job on a timeout.
            done, _ = await asyncio.wait({job.future}, timeout=timeout_s)
        except asyncio.CancelledError:
            job.abandoned = True
            raise
        if not done:
            job.abandoned = True
            raise JobTimeout()
        if job.future.cancelled():  # the worker stopped (shutdown) before the job ran
            raise Closed()
        return job

    # ------------------------------------------------------------------ the worker
    async def _take_batch(self) -> list[Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.batch_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [j for j in batch if not j.abandoned and not j.future.done()]

    async def _work(self) -> None:
        while True:
            batch = await self._take_batch()
            if not batch:
                continue
            self.running = len(batch)
            started = time.perf_counter()
            for job in batch:
                job.batch_size = len(batch)
                job.queue_seconds = started - job.enqueued
            if self.on_batch is not None:  # recorded when the batch starts: its answers may be read at once
                self.on_batch(len(batch), [j.queue_seconds for j in batch])
            loop = asyncio.get_running_loop()

            def resolved(job: Job, ok: bool, value: Any) -> None:  # called from the thread
                loop.call_soon_threadsafe(_resolve, job, ok, value)

            try:
                await in_thread(self.lock, _run_batch, batch, resolved)
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.cancel()
                raise
            except BaseException as exc:  # the batch runner itself failed: answer the jobs left with it
                log.exception("a batch failed")
                for job in batch:
                    _resolve(job, False, exc)
            finally:
                self.running = 0


def _resolve(job: Job, ok: bool, value: Any) -> None:
    """On the event loop: answer ``job``'s caller (nobody waits for an abandoned job: cancel it, so no
    unretrieved exception is logged)."""
    if job.future.done():
        return
    if value is _SKIPPED or job.abandoned:
        job.future.cancel()
    elif ok:
        job.future.set_result(value)
    else:
        job.future.set_exception(value)


def _run_batch(batch: list[Job], resolved: Callable[[Job, bool, Any], None]) -> None:
    """In the worker thread: each job in turn, its caller answered as soon as it is done (not at the
    end of the batch); one job's error is that job's answer alone."""
    for job in batch:
        if job.abandoned:
            resolved(job, True, _SKIPPED)
            continue
        t0 = time.perf_counter()
        try:
            ok, value = True, job.fn()
        except Exception as exc:  # noqa: BLE001 - the answer of the one caller it belongs to
            ok, value = False, exc
        job.run_seconds = time.perf_counter() - t0
        resolved(job, ok, value)
