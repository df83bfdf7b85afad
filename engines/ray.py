"""Ray as the engine past one machine: reranking (and corpus encoding) on a pool of Ray actors.

Queries go through Ray Data ``map_batches`` with an actor pool (:class:`ray.data.ActorPoolStrategy`):
each actor builds one model from a :class:`~attnsift.engines.recipe.RerankerRecipe` when it starts
(``num_gpus_per_worker`` GPUs and ``num_cpus_per_worker`` CPUs each, torch pinned to that many
threads) and reranks the batches it is given, one query at a time. Results come back to the driver,
which puts them in query order (or hands them on as they arrive, for writers that record each one).
Corpus chunks go the same way; a chunk of a file is a shard the worker reads (:mod:`.encoding`).

A worker that dies (killed, out of memory, its node lost) is restarted by Ray and its batch is run again
(``max_retries``): a dead worker's batch never returned (nothing lost); the first result counts (nothing twice).

``address`` (or ``RAY_ADDRESS``) reaches an existing cluster (``ray start --head`` on the head node,
``ray start --address=HEAD:6379 --num-gpus=1`` on each GPU worker); without one a local Ray starts
with ``num_workers * num_cpus_per_worker`` CPUs and is shut down by :meth:`RayEngine.close`. Ray's own
log lines stay in its session folder (``/tmp/ray/session_latest/logs``), off the terminal.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import re
import socket
import warnings
from typing import Any, Iterable, Iterator, Sequence

from attnsift.engines.base import EngineResult, merge_truncation
from attnsift.engines.encoding import Shard, read_shard
from attnsift.engines.recipe import EncoderRecipe, recipe_of

__all__ = ["RayEngine", "require_ray", "check_address", "RAY_EXTRA"]

log = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'attnsift[ray]'"
_ADDRESS = re.compile(r"^(auto|local|ray://[^\s/:]+(:\d{1,5})?|[^\s/:]+:\d{1,5})$")


def require_ray() -> Any:
    """The ``ray`` module (with Ray Data), or an ImportError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"--engine ray needs Ray (with Ray Data): {RAY_EXTRA}") from exc
    return ray


def check_address(address: str | None) -> str | None:
    """A Ray address checked by its form: ``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST[:PORT]``.

    Raises
    ------
    ValueError
        Anything else (the message shows the forms).
    """
    if address is None:
        return None
    if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
        raise ValueError(f"--ray-address {address!r} is not a Ray address; give HOST:PORT of the head node "
                         "(e.g. 10.0.0.1:6379, what `ray start --head` prints), ray://HOST:10001, or auto")
    return address.strip()


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Raise ConnectionError when ``HOST:PORT`` does not answer a TCP connection within ``timeout``."""
    if address in ("auto", "local"):
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.partition(":")
    try:
        with socket.create_connection((host, int(port or 10001)), timeout=timeout):
            return
    except OSError as exc:
        raise ConnectionError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start its head "
                              "with `ray start --head`, check the address, or drop --ray-address for a local "
                              "Ray") from None


def _positive(value: Any, name: str, allow_zero: bool = False) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return value


class _RerankWorker:
    """One Ray actor: one reranker, built from the recipe when the actor starts."""

    ARGS: tuple = ()  # (recipe, depth, threads, kill_once): set on the subclass each run makes (see _map)

    def __init__(self) -> None:
        recipe, depth, threads, kill_once = self.ARGS
        _setup_worker(threads)
        self.reranker = recipe.build()
        self.depth, self.kill_once = depth, kill_once

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        _maybe_die(self.kill_once)
        rr = self.reranker
        scope = getattr(rr, "truncation_run", None)
        results = []
        with scope() if scope is not None else contextlib.nullcontext():
            for payload in batch["payload"]:
                out = rr.rerank_detailed(pickle.loads(payload), self.depth)
                results.append(pickle.dumps(([(c.doc_id, c.score) for c in out.ranking.candidates],
                                             float(out.seconds))))
        figure = getattr(rr, "truncation", None)
        cuts = [pickle.dumps(figure)] + [pickle.dumps(None)] * (len(results) - 1)
        return {"i": np.asarray(batch["i"], dtype=np.int64), "result": np.array(results, dtype=object),
                "truncation": np.array(cuts, dtype=object)}


class _EncodeWorker:
    """One Ray actor: one document encoder, built from the recipe when the actor starts."""

    ARGS: tuple = ()  # (recipe, want, threads, kill_once)

    def __init__(self) -> None:
        recipe, want, threads, kill_once = self.ARGS
        _setup_worker(threads)
        self.encoder = recipe.build()
        self.want, self.kill_once = want, kill_once

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        _maybe_die(self.kill_once)
        out: list[bytes] = []
        for payload in batch["payload"]:
            chunk = pickle.loads(payload)
            try:
                texts = read_shard(chunk) if isinstance(chunk, Shard) else chunk  # a shard: read here, on this node
            except (OSError, ValueError) as exc:  # this node cannot read it: the driver raises the same error
                out.append(pickle.dumps(exc))
                continue
            out.append(pickle.dumps(self.encoder._encode(texts, is_query=False, want=self.want, progress=False)))
        return {"i": np.asarray(batch["i"], dtype=np.int64), "result": np.array(out, dtype=object)}


def _setup_worker(threads: int) -> None:
    import torch

    from attnsift.progress import quiet_third_party

    torch.set_num_threads(int(threads))
    quiet_third_party()


def _maybe_die(kill_once: str | None) -> None:
    """Testing hook: the first worker to claim the file ``kill_once`` ends its own process (as a crash
    or the OOM killer would) before returning its batch."""
    if not kill_once:
        return
    try:
        fd = os.open(kill_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


class RayEngine:
    """Rerank (and encode) on a pool of Ray actors, one model per actor.

    Parameters
    ----------
    address : str, optional
        An existing cluster's address (``HOST:PORT``, ``ray://HOST:10001``, ``auto``); default
        ``$RAY_ADDRESS``, else a local Ray is started (and stopped by :meth:`close`).
    num_workers : int
        Actors in the pool (each holds one model).
    num_cpus_per_worker : float
        CPUs Ray reserves per actor; torch in the actor runs that many threads (at least 1) unless
        ``threads_per_worker`` says otherwise.
    num_gpus_per_worker : float
        GPUs per actor (0: the CPU; a fraction shares a GPU between actors).
    batch_size : int
        Queries per batch sent to an actor (the unit Ray retries when a worker dies).
    max_retries : int
        How many times Ray restarts a dead actor and reruns its batch (-1: without limit).
    threads_per_worker : int, optional
        Torch threads per actor (default: ``max(1, int(num_cpus_per_worker))``).
    object_store_memory : int, optional
        Bytes of shared memory for a local Ray's object store (default 256 MiB: the rankings of a
        run, not model weights, travel through it).
    _kill_once : str, optional
        Testing hook: the path of a file; the first actor to create it exits on its first batch.

    Raises
    ------
    ValueError
        A malformed address or a non-positive count, at construction.
    ImportError
        Ray is not installed (``pip install 'attnsift[ray]'``).

    Examples
    --------
    >>> with RayEngine(num_workers=8, num_gpus_per_worker=1, address="10.0.0.1:6379") as engine:
    ...     run = Pipeline(bm25, RerankerRecipe("icr", "Qwen/Qwen2.5-7B-Instruct"), depth=100).run(queries, engine=engine)
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int = 2, num_cpus_per_worker: float = 1,
                 num_gpus_per_worker: float = 0, batch_size: int = 1, max_retries: int = 3,
                 threads_per_worker: int | None = None, object_store_memory: int | None = None,
                 _kill_once: str | None = None) -> None:
        require_ray()
        self.address = check_address(address if address is not None else (os.environ.get("RAY_ADDRESS") or None))
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        self.num_workers = num_workers
        self.num_cpus_per_worker = _positive(num_cpus_per_worker, "num_cpus_per_worker")
        self.num_gpus_per_worker = _positive(num_gpus_per_worker, "num_gpus_per_worker", allow_zero=True)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < -1:
            raise ValueError(f"max_retries must be an integer >= -1 (-1: without limit), got {max_retries!r}")
        self.max_retries = max_retries
        self.threads_per_worker = int(threads_per_worker or max(1, int(num_cpus_per_worker)))
        self.object_store_memory = object_store_memory or 256 * 1024 * 1024
        self._kill_once = _kill_once
        self._started = False
        self.truncation: dict[str, Any] | None = None
        #: sent to encode, over this engine's life: chunks, of them shards (read by the workers), texts, bytes
        self.sent = {"chunks": 0, "shards": 0, "texts": 0, "bytes": 0}

    def __repr__(self) -> str:
        where = self.address or "local"
        return (f"RayEngine(address={where!r}, num_workers={self.num_workers}, num_cpus_per_worker="
                f"{self.num_cpus_per_worker}, num_gpus_per_worker={self.num_gpus_per_worker})")

    # ------------------------------------------------------------------ the cluster
    def probe(self) -> "RayEngine":
        """Check, in seconds and before any work, that the cluster's address answers (ConnectionError if not)."""
        if self.address is not None:
            _reachable(self.address)
        return self

    def start(self) -> "RayEngine":
        """Connect to the cluster (or start a local Ray) now; later calls reuse it.

        Raises
        ------
        ConnectionError
            The address does not answer.
        ValueError
            The cluster has fewer CPUs or GPUs than one worker asks for.
        """
        ray = require_ray()
        if not ray.is_initialized():
            _quiet_ray()
            common = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                          configure_logging=True)
            if self.address is not None and self.address != "local":
                _reachable(self.address)
                with _stderr_silenced():
                    ray.init(address=self.address, **common)
            else:
                cpus = max(1, math.ceil(self.num_workers * self.num_cpus_per_worker))
                with _stderr_silenced():
                    ray.init(address="local", num_cpus=cpus, object_store_memory=self.object_store_memory, **common)
            self._started = True
            _route_ray_messages()
        _quiet_data()
        self._check_resources(ray)
        return self

    def _check_resources(self, ray: Any) -> None:
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        if cpus < self.num_cpus_per_worker or gpus < self.num_gpus_per_worker:
            raise ValueError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs; one worker asks for "
                             f"{self.num_cpus_per_worker:g} CPUs and {self.num_gpus_per_worker:g} GPUs: add nodes "
                             "(ray start --address=... --num-gpus=1) or ask for less")
        fit = min(cpus / self.num_cpus_per_worker,
                  gpus / self.num_gpus_per_worker if self.num_gpus_per_worker else math.inf)
        if fit < self.num_workers:
            log.warning("the Ray cluster fits %d of the %d workers asked for (%g CPUs, %g GPUs); running %d",
                        int(fit), self.num_workers, cpus, gpus, int(fit))
        self._pool_size = max(1, min(self.num_workers, int(fit)))

    def close(self) -> None:
        """Stop the local Ray this engine started (a cluster it connected to is only disconnected)."""
        if self._started:
            require_ray().shutdown()
            self._started = False

    def __enter__(self) -> "RayEngine":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ work
    def _map(self, worker: type, args: tuple, payloads: Sequence[bytes]) -> Iterator[dict[str, Any]]:
        """Run a pool of ``worker`` actors (``args`` as their ``ARGS``) over ``payloads``; yield the output
        batches as they finish."""
        ray = require_ray()
        self.start()
        n = len(payloads)
        items = [{"i": i, "payload": p} for i, p in enumerate(payloads)]
        blocks = max(1, min(n, math.ceil(n / self.batch_size), 4096))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        retries = {"max_restarts": self.max_retries, "max_task_retries": self.max_retries}
        # The arguments ride on a class made for this run (pickled by value with it, so a restarted
        # actor rebuilds from the class alone).
        bound = type(worker.__name__, (worker,), {"ARGS": args})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray Data's deprecation of passing the retry settings this way
            out = ds.map_batches(bound, batch_size=self.batch_size, batch_format="numpy",
                                 compute=ray.data.ActorPoolStrategy(size=min(self._pool_size, blocks)),
                                 num_cpus=self.num_cpus_per_worker, num_gpus=self.num_gpus_per_worker or None,
                                 **retries)
        try:
            yield from out.iter_batches(batch_size=None, batch_format="numpy")
        except Exception as exc:  # a worker's own error: raise what the user can act on
            raise _user_error(exc) from None

    def rerank_stream(self, reranker: Any, rankings: Sequence[Any], depth: int | None, *,
                      ordered: bool = True) -> Iterator[EngineResult]:
        """Rerank the top ``depth`` of every ranking on the actor pool (see :class:`attnsift.engines.Engine`).

        ``reranker`` is a :class:`~attnsift.engines.recipe.RerankerRecipe` or a reranker built by name
        (:func:`~attnsift.engines.recipe.recipe_of` makes its recipe). Candidates' documents travel to the
        workers and are reattached from the input on the way back.
        """
        from attnsift.types import Candidate, Ranking

        recipe = recipe_of(reranker)
        rankings = list(rankings)
        self.truncation = None
        if not rankings:
            return
        figures: list[dict[str, Any] | None] = []
        pending: dict[int, EngineResult] = {}
        seen: set[int] = set()
        nxt = 0
        payloads = [pickle.dumps(rk, protocol=pickle.HIGHEST_PROTOCOL) for rk in rankings]
        try:
            for batch in self._map(_RerankWorker, (recipe, depth, self.threads_per_worker, self._kill_once), payloads):
                for i, blob, cut in zip(batch["i"], batch["result"], batch["truncation"]):
                    i = int(i)
                    if i in seen:  # a retried batch that had returned after all: keep the first result
                        log.debug("query #%d came back twice; the second result is dropped", i)
                        continue
                    seen.add(i)
                    figures.append(pickle.loads(cut))
                    pairs, seconds = pickle.loads(blob)
                    src = rankings[i]
                    docs = {c.doc_id: c.document for c in src.candidates}
                    res = EngineResult(i, Ranking(src.query, tuple(Candidate(d, s, docs.get(d)) for d, s in pairs)),
                                       seconds)
                    if not ordered:
                        yield res
                        continue
                    pending[i] = res
                    while nxt in pending:
                        yield pending.pop(nxt)
                        nxt += 1
        finally:
            self.truncation = merge_truncation(figures)
            _warn_cuts(recipe, self.truncation)
        missing = len(rankings) - len(seen)
        if missing:
            raise RuntimeError(f"the Ray engine returned {len(seen)} of {len(rankings)} queries; rerun (a bench resumes)")

    def encode_stream(self, encoder: Any, chunks: Sequence[Any], want: str = "pooled",
                      device: Any = None) -> Iterator[tuple[int, Any]]:
        """Encode ``chunks`` of documents on the actor pool; yield ``(chunk index, Encoder._encode output)``
        in chunk order. ``encoder``: a built Encoder (its recipe travels) or an EncoderRecipe. A chunk is
        a list of texts (sent from here) or a :class:`~attnsift.engines.encoding.Shard` (a few hundred
        bytes: the worker reads the texts from its own copy of the file, or raises FileNotFoundError when
        it has none). :attr:`sent` counts what was sent."""
        recipe = encoder if isinstance(encoder, EncoderRecipe) else EncoderRecipe.of(encoder, device)
        chunks = [c if isinstance(c, Shard) else list(c) for c in chunks]
        payloads = [pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL) for c in chunks]
        for key, add in (("chunks", len(chunks)), ("shards", sum(isinstance(c, Shard) for c in chunks)),
                         ("texts", sum(len(c) for c in chunks if not isinstance(c, Shard))),
                         ("bytes", sum(len(p) for p in payloads))):
            self.sent[key] += add
        pending: dict[int, Any] = {}
        nxt = 0
        for batch in self._map(_EncodeWorker, (recipe, want, self.threads_per_worker, self._kill_once), payloads):
            for i, blob in zip(batch["i"], batch["result"]):
                if int(i) < nxt or int(i) in pending:
                    continue
                pending[int(i)] = pickle.loads(blob)
                while nxt in pending:
                    if isinstance(pending[nxt], BaseException):  # a worker could not read its shard
                        raise pending[nxt]
                    yield nxt, pending.pop(nxt)
                    nxt += 1
        if nxt < len(payloads):
            raise RuntimeError(f"the Ray engine returned {nxt} of {len(payloads)} chunks; rerun (encodings resume)")


def _warn_cuts(recipe: Any, figure: dict[str, Any] | None) -> None:
    """The run's one cut-document warning, as the local run logs it (attnsift.rerank.base)."""
    if not figure:
        return
    from attnsift.rerank.base import truncation_message, truncation_log
    from attnsift.registry import RERANKERS, _resolve

    cls = _resolve(RERANKERS[recipe.kind])
    msg = truncation_message(getattr(cls, "name", recipe.kind), figure,
                             getattr(cls, "truncation_hint", "--option max_words= changes this"))
    if msg:
        truncation_log.warning(msg)


def _user_error(exc: BaseException) -> BaseException:
    """The error a worker raised (a ValueError for a model it cannot find, ...), else a one-line RuntimeError."""
    cause = exc
    for _ in range(8):
        inner = getattr(cause, "cause", None) or cause.__cause__
        if inner is None or inner is cause:
            break
        cause = inner
    if isinstance(cause, (ValueError, TypeError, ImportError, FileNotFoundError, MemoryError)):
        return type(cause)(f"a Ray worker failed: {cause}")
    first = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    return RuntimeError(f"the Ray engine failed: {first[:300]} (Ray's logs: /tmp/ray/session_latest/logs)")


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points to /dev/null for the block: the C++ core of a starting Ray writes a line
    there that no setting turns off. Errors still arrive as Python exceptions after the block."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (a notebook): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _route_ray_messages() -> None:
    """Ray's driver prints the cluster's error notices (a worker died, a task is retried) on stdout,
    where they would mix with ``--json`` output: send them to attnsift's log at DEBUG (``-v`` shows
    them; a failure that matters arrives as an exception)."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:  # pragma: no cover - another Ray layout: its notices stay as they are
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_attnsift", False):
        return

    def routed(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                log.debug("ray: %s", line)
            return
        original(data, ignore_prefix)

    routed._attnsift = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = routed


def _quiet_ray() -> None:
    """Keep Ray's start-up and C++ log lines off the terminal (they stay in Ray's session logs;
    ``RAY_BACKEND_LOG_LEVEL`` set beforehand wins)."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
    for name in ("ray", "ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _quiet_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.enable_auto_log_stats = False
    ctx.verbose_stats_logs = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray").setLevel(logging.ERROR)
    # A worker's error reaches the user once, as the exception _map raises (not also as Ray Data's log lines).
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
