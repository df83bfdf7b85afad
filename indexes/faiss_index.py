"""A thin, checked wrapper around a faiss vector index, built in one shot or from streamed batches.

:class:`FaissIndex` builds one of three index types over ``[N, dim]`` float32 vectors and searches it,
returning integer row positions (callers map them to document ids):

- ``"flat"``: exact search (``IndexFlatIP`` / ``IndexFlatL2``); the default.
- ``"hnsw"``: graph search (``IndexHNSWFlat``), fast and near-exact; memory ~ the vectors + the graph
  (``4 * dim + 8 * hnsw_m`` bytes per vector and more), so it must fit in RAM whole.
- ``"ivfpq"``: inverted lists + product quantisation (``IndexIVFPQ``), compact (``pq_m * nbits / 8``
  bytes per vector + an 8-byte id) and approximate; trained on a seeded sample of the vectors. With
  ``refine="sq8" | "fp16" | "flat"`` its ``k_factor * k`` candidates are re-scored with finer codes
  (``IndexRefine``, see :mod:`attnsift.indexes.faiss_refine`).

Large collections never need all their vectors at once: :meth:`FaissIndex.build_streaming` takes a
function that yields the vectors in batches, collects the training sample in a first pass (only the
sampled rows are kept) and fills the index in a second, in chunks of ``add_chunk`` rows whatever the
batch size. :meth:`FaissIndex.build` is the same procedure over one array, so both give the same index.
The options are checked by :func:`resolve_index_params` (one-line errors, before any training).

It is saved into a folder the caller owns (the caller wraps it in :func:`attnsift.io.atomic_dir`
and writes the manifest).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from attnsift.errors import IndexCorruptedError, require
from attnsift.indexes import faiss_refine as refining

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
METRICS = ("ip", "l2")
INDEX_FILE = "index.faiss"
#: Rows handed to faiss per ``add`` call; fixed, so an HNSW graph does not depend on the caller's batch size.
ADD_CHUNK = 65_536
HNSW_PARAMS = ("hnsw_m", "ef_construction", "ef_search")
IVFPQ_PARAMS = ("nlist", "pq_m", "nbits", "nprobe", "train_size", "seed", *refining.REFINE_PARAMS)


def _faiss() -> Any:
    return require("faiss", "dense", purpose="dense and late-interaction indexes")


def _default_pq_m(dim: int) -> int:
    # About 8 dimensions per sub-quantiser is the usual accuracy / size trade-off; m must divide dim.
    for m in range(max(1, dim // 8), 0, -1):
        if dim % m == 0:
            return m
    return 1


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def resolve_index_params(index_type: str, n: int, dim: int, metric: str = "ip", **params: Any) -> dict[str, Any]:
    """The build parameters of an index over ``n`` vectors of ``dim``: defaults filled in, all checked.

    Cheap (no faiss, no vectors): callers run it before encoding or reading anything.

    Parameters
    ----------
    index_type : {"flat", "hnsw", "ivfpq"}
    n, dim : int
        Vectors to index and their dimension.
    metric : {"ip", "l2"}
    **params
        ``hnsw_m`` [32], ``ef_construction`` [200], ``ef_search`` [128] for hnsw; ``nlist``
        [~4 sqrt(n), at most one per 39 training vectors], ``pq_m`` [~dim / 8, a divisor of dim], ``nbits`` [8, fewer for
        tiny collections], ``nprobe`` [min(nlist, 16)], ``train_size`` [100,000], ``seed`` [0], ``refine``
        [None; ``sq8``, ``fp16``, ``flat``], ``k_factor`` [8, with refine] for ivfpq.

    Returns
    -------
    dict
        Every parameter of the type (an empty dict for flat).

    Raises
    ------
    ValueError
        An unknown type, metric or parameter, a parameter of another type, or an impossible value
        (``nlist`` above ``n``, ``pq_m`` not dividing ``dim``, too few vectors to train ``nbits``).
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    n, dim = _positive_int("the number of vectors", n), _positive_int("dim", dim)
    params = {k: v for k, v in params.items() if v is not None}
    if index_type != "ivfpq":
        params.pop("seed", None)  # only IVF-PQ samples and clusters; a seed elsewhere changes nothing
    own = {"flat": (), "hnsw": HNSW_PARAMS, "ivfpq": IVFPQ_PARAMS}[index_type]
    other = sorted(set(params) - set(own))
    if other:
        known = set(HNSW_PARAMS + IVFPQ_PARAMS)
        bad = [k for k in other if k not in known]
        if bad:
            raise ValueError(f"unknown faiss option(s) {', '.join(bad)}; accepted: {', '.join(HNSW_PARAMS + IVFPQ_PARAMS)}")
        raise ValueError(f"{', '.join(other)} do(es) not apply to index_type {index_type!r}; drop them or change index_type")
    if index_type == "flat":
        return {}
    if index_type == "hnsw":
        out = {"hnsw_m": 32, "ef_construction": 200, "ef_search": 128, **params}
        _positive_int("hnsw_m", out["hnsw_m"], 2)
        for key in ("ef_construction", "ef_search"):
            _positive_int(key, out[key])
        return {k: int(v) for k, v in out.items()}
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    train_size = _positive_int("train_size", params.get("train_size", 100_000))
    pq_m = _positive_int("pq_m", params.get("pq_m", _default_pq_m(dim)))
    if dim % pq_m:
        divisors = [m for m in range(1, dim + 1) if dim % m == 0 and m <= 96]
        raise ValueError(f"pq_m (m) must divide the dimension {dim}, got {pq_m}; choose one of {divisors}")
    n_train = min(n, train_size)
    nlist = params.get("nlist")
    if nlist is None:  # ~4 sqrt(N) lists, with >= 39 training vectors each (faiss's k-means minimum)
        nlist = int(max(1, min(4 * math.sqrt(n), n_train // 39)))
    nlist = _positive_int("nlist", nlist)
    if nlist > n_train:
        raise ValueError(
            f"nlist ({nlist}) exceeds the {n_train} training vectors (of {n}); k-means needs at least one per list: "
            "use fewer lists (about 4 sqrt(N)), a larger train_size, or a flat index"
        )
    nbits = params.get("nbits")
    if nbits is None:
        # PQ trains 2**nbits centroids per sub-space: it needs at least that many vectors.
        nbits = int(max(1, min(8, math.floor(math.log2(max(2, n_train // 4))))))
    nbits = _positive_int("nbits", nbits)
    if nbits > 16:
        raise ValueError(f"nbits must be in 1..16 (8 is usual), got {nbits}")
    if 2**nbits > n_train:
        raise ValueError(f"nbits={nbits} trains {2**nbits} centroids per sub-quantiser but only {n_train} training "
                         f"vectors exist; use nbits <= {int(math.log2(n_train)) if n_train > 1 else 1}")
    nprobe = _positive_int("nprobe", params.get("nprobe", min(nlist, 16)))
    return {"nlist": nlist, "pq_m": pq_m, "nbits": nbits, "nprobe": min(nprobe, nlist), "train_size": train_size,
            "seed": int(seed), **refining.resolve_refine(params)}


def estimated_bytes(index_type: str, n: int, dim: int, params: dict[str, Any]) -> int:
    """About how many bytes the filled index takes in memory (vectors, graph links or codes, lists)."""
    if index_type == "flat":
        return 4 * n * dim
    if index_type == "hnsw":
        # level 0 holds 2M links of 4 bytes, upper levels ~1/M more; plus levels and offsets.
        return int(n * (4 * dim + 8.5 * params["hnsw_m"] + 16))
    second = n * refining.refine_bytes_per_vector(params["refine"], dim) if params.get("refine") else 0
    return n * (math.ceil(params["pq_m"] * params["nbits"] / 8) + 8) + 4 * params["nlist"] * dim + second


def sample_positions(n: int, train_size: int, seed: int) -> np.ndarray:
    """Sorted row positions of the seeded training sample (all rows when ``n <= train_size``)."""
    if n <= train_size:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, train_size, replace=False)).astype(np.int64)


def _check_batch(x: Any, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"vectors must be [n, {dim}], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values; the encoder produced invalid output")
    return x


def check_memory(index_type: str, n: int, dim: int, params: dict[str, Any]) -> None:
    """One-line ValueError when an index that lives in RAM whole (hnsw; ivfpq's refine copy) exceeds it."""
    if params.get("refine"):
        base = estimated_bytes(index_type, n, dim, {**params, "refine": None})
        return refining.check_refine_memory(params["refine"], n, dim, base)
    need, total = estimated_bytes(index_type, n, dim, params), refining.total_ram()
    if index_type == "hnsw" and total is not None and need > total:  # None: not POSIX, nothing to check against
        raise ValueError(f"a {index_type} index of {n} x {dim} needs about {need / 1e9:.1f} GB in memory, more than this "
                         f"machine's {total / 1e9:.1f} GB; use index_type=ivfpq (about "
                         f"{estimated_bytes('ivfpq', n, dim, resolve_index_params('ivfpq', n, dim)) / 1e9:.1f} GB)")


class FaissIndex:
    """A faiss index over row vectors, with its build parameters.

    Use :meth:`build`, :meth:`build_streaming` or :meth:`load`; :meth:`create` + :meth:`train` +
    :meth:`add` are the steps they take.
    """

    def __init__(self, index: Any, index_type: str, metric: str, params: dict) -> None:
        self.index = index
        self.index_type = index_type
        self.metric = metric
        self.params = dict(params)

    def __repr__(self) -> str:
        return f"FaissIndex({self.index_type!r}, metric={self.metric!r}, ntotal={self.ntotal}, dim={self.dim}, {self.params})"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def refined(self) -> bool:
        """Whether the candidates are re-scored with a second copy (``refine``)."""
        return bool(self.params.get("refine"))

    def _ivf(self) -> Any:
        return refining.base_index(_faiss(), self.index)

    # ------------------------------------------------------------------ building
    @classmethod
    def create(cls, dim: int, n: int, index_type: str = "flat", metric: str = "ip", **params: Any) -> "FaissIndex":
        """An empty index for ``n`` vectors of ``dim`` (``ivfpq`` still to :meth:`train`).

        ``params`` as in :func:`resolve_index_params`; ``n`` sets the defaults and is checked against them.
        """
        faiss = _faiss()
        params = resolve_index_params(index_type, n, dim, metric, **params)
        check_memory(index_type, n, dim, params)
        fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        if index_type == "flat":
            index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
        elif index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], fmetric)
            index.hnsw.efConstruction = params["ef_construction"]
            index.hnsw.efSearch = params["ef_search"]
        else:
            quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["pq_m"], params["nbits"], fmetric)
            index.nprobe = params["nprobe"]
            index.cp.seed = params["seed"]  # k-means seed: the same sample gives the same lists
            if params.get("refine"):
                index = refining.make_refined(faiss, index, params["refine"], dim, metric, params["k_factor"])
                refining.reserve(faiss, index, n)  # no doubling copy of the second copy while filling
        return cls(index, index_type, metric, params)

    def train(self, sample: np.ndarray) -> None:
        """Train an ``ivfpq`` index (k-means lists, PQ codebooks) on ``sample`` ``[t, dim]``; others need none."""
        if self.index_type != "ivfpq":
            return
        x = _check_batch(sample, self.dim)
        if x.shape[0] < self.params["nlist"]:
            raise ValueError(f"training needs at least nlist={self.params['nlist']} vectors, got {x.shape[0]}")
        self.index.train(x)
        self.params["train_size_used"] = int(x.shape[0])

    def add(self, vectors: np.ndarray) -> None:
        """Append ``vectors`` ``[b, dim]`` (rows get the next positions); an ``ivfpq`` index must be trained."""
        if not self.is_trained:
            raise ValueError("this ivfpq index is not trained yet; call train(sample) first (build_streaming does)")
        x = _check_batch(vectors, self.dim)
        if x.shape[0]:
            self.index.add(x)

    @classmethod
    def build(cls, vectors: np.ndarray, index_type: str = "flat", metric: str = "ip", *,
              add_chunk: int = ADD_CHUNK, **params: Any) -> "FaissIndex":
        """Build an index over ``vectors`` (``[N, dim]``, converted to float32).

        Parameters
        ----------
        index_type : {"flat", "hnsw", "ivfpq"}
        metric : {"ip", "l2"}
            Inner product (cosine on normalised vectors) or Euclidean distance (scores are then
            negative squared distances, so larger is always better).
        add_chunk : int
            Rows per faiss ``add`` call.
        **params
            ``hnsw_m``, ``ef_construction``, ``ef_search`` (hnsw); ``nlist``, ``pq_m``, ``nbits``,
            ``nprobe``, ``train_size``, ``seed`` (ivfpq); defaults in :func:`resolve_index_params`.
        """
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"vectors must be a non-empty [N, dim] array, got shape {x.shape}; is the corpus empty?")
        return cls.build_streaming(lambda: iter((x,)), x.shape[0], x.shape[1], index_type, metric, add_chunk=add_chunk,
                                   progress=False, **params)

    @classmethod
    def build_streaming(cls, batches: Callable[[], Iterable[np.ndarray]], n: int, dim: int, index_type: str = "flat",
                        metric: str = "ip", *, train: np.ndarray | None = None, add_chunk: int = ADD_CHUNK,
                        progress: bool | None = None, **params: Any) -> "FaissIndex":
        """Build an index over ``n`` vectors that arrive in batches, never holding them all.

        Parameters
        ----------
        batches : callable returning an iterable of np.ndarray
            Each call yields the same ``[b, dim]`` batches in the same order (``n`` rows in all). It is
            called twice for ``ivfpq`` (once to collect the seeded training sample, once to fill) unless
            ``train`` is given, otherwise once.
        n, dim : int
            Rows in all and their dimension (they set the defaults and are checked).
        index_type, metric, **params
            As in :meth:`build`.
        train : np.ndarray, optional
            ``[t, dim]`` training vectors to use instead of the seeded sample of the batches.
        add_chunk : int
            Rows per faiss ``add`` call: batches are regrouped into chunks of this size, so the index
            does not depend on the batch size (peak extra memory: one chunk, one reused buffer).
        progress : bool or None
            Progress on stderr (None: the process setting).

        Raises
        ------
        ValueError
            Bad options (before any batch is read), batches of another dimension, or a row count other
            than ``n``.
        TypeError
            ``batches`` is not callable.
        """
        from attnsift import progress as prog

        if not callable(batches):
            raise TypeError("batches must be a function returning an iterable of [b, dim] arrays (called once per pass)")
        add_chunk = _positive_int("add_chunk", add_chunk)
        out = cls.create(dim, n, index_type, metric, **params)
        if index_type == "ivfpq":
            if train is None:
                with prog.step(f"collecting the ivfpq training sample ({min(n, out.params['train_size'])} of {n} vectors)",
                               progress=progress):
                    train = _collect_rows(batches(), sample_positions(n, out.params["train_size"], out.params["seed"]),
                                          n, dim)
            with prog.step(f"training ivfpq (nlist={out.params['nlist']}, m={out.params['pq_m']}, "
                           f"nbits={out.params['nbits']}) on {len(train)} vectors", progress=progress):
                out.train(train)
            del train
        counter = prog.bar(total=n, desc=f"filling the {index_type} index", unit="vec", progress=progress)
        chunk = np.empty((min(add_chunk, n), dim), np.float32)  # one buffer, reused: batches are copied in
        held = seen = 0
        for batch in batches():
            x = _check_batch(batch, dim)
            seen += x.shape[0]
            if seen > n:
                raise ValueError(f"the batches hold more than the {n} vectors announced")
            while x.shape[0]:
                take = min(add_chunk - held, x.shape[0])
                chunk[held : held + take] = x[:take]
                x, held = x[take:], held + take
                if held == add_chunk:
                    out.add(chunk)  # faiss copies (or encodes) the rows: the buffer is free again
                    counter.update(held)
                    held = 0
        if held:
            out.add(chunk[:held])
            counter.update(held)
        counter.close()
        if seen != n:
            raise ValueError(f"the batches held {seen} vectors, {n} were announced")
        return out

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None,
               k_factor: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows for each query.

        Parameters
        ----------
        queries : np.ndarray
            ``[B, dim]``.
        k : int
            Capped at the number of indexed vectors.
        nprobe, ef_search, k_factor : int, optional
            For this call only (ivfpq / hnsw / refined ivfpq): lists probed, HNSW beam width, candidates
            re-scored per result; default: the index's.

        Returns
        -------
        scores : np.ndarray
            ``[B, k']`` float32, larger is better (negative squared distance for ``l2``).
        positions : np.ndarray
            ``[B, k']`` int64 row positions; ``-1`` where the index found fewer than ``k'`` rows
            (possible with ``ivfpq`` and small ``nprobe``).
        """
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [B, {self.dim}], got shape {q.shape}")
        k = min(int(k), self.ntotal)
        if q.shape[0] == 0 or k == 0:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        search_params = self._search_params(nprobe, ef_search, k_factor)
        if search_params is None:
            scores, pos = self.index.search(q, k)
        else:
            scores, pos = self.index.search(q, k, params=search_params[0])
        if self.metric == "l2":
            scores = -scores
        return scores.astype(np.float32, copy=False), pos.astype(np.int64, copy=False)

    def _search_params(self, nprobe: int | None, ef_search: int | None, k_factor: int | None) -> tuple | None:
        """``(params, what they point to...)`` for one search, or None for the index's own settings."""
        self.check_search_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        faiss = _faiss()
        if self.refined and (nprobe is not None or k_factor is not None):
            return refining.refine_search_params(faiss, k_factor or self.params["k_factor"], nprobe or self._ivf().nprobe)
        if nprobe is not None:
            return (faiss.SearchParametersIVF(nprobe=int(nprobe)),)
        if ef_search is not None:
            return (faiss.SearchParametersHNSW(efSearch=int(ef_search)),)
        return None

    def check_search_params(self, *, nprobe: Any = None, ef_search: Any = None, k_factor: Any = None) -> None:
        """ValueError unless ``nprobe`` (ivfpq) / ``ef_search`` (hnsw) / ``k_factor`` (refined ivfpq) are
        positive and fit this index."""
        if k_factor is not None:
            refining.check_k_factor(k_factor, self.index_type if not self.refined else None)
        if nprobe is not None:
            if self.index_type != "ivfpq":
                raise ValueError(f"nprobe applies to an ivfpq index, this one is {self.index_type!r}")
            _positive_int("nprobe", nprobe)
            if nprobe > self.params.get("nlist", nprobe):
                raise ValueError(f"nprobe ({nprobe}) exceeds the index's nlist ({self.params['nlist']})")
        if ef_search is not None:
            if self.index_type != "hnsw":
                raise ValueError(f"ef_search applies to an hnsw index, this one is {self.index_type!r}")
            _positive_int("ef_search", ef_search)

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None,
                          k_factor: int | None = None) -> None:
        """Trade speed for recall at query time from now on (IVF ``nprobe``, HNSW ``efSearch``, refine
        ``k_factor``)."""
        self.check_search_params(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        if k_factor is not None:
            self.index.k_factor = float(k_factor)
            self.params["k_factor"] = int(k_factor)
        if nprobe is not None:
            self._ivf().nprobe = int(nprobe)
            self.params["nprobe"] = int(nprobe)
        if ef_search is not None:
            self.index.hnsw.efSearch = int(ef_search)
            self.params["ef_search"] = int(ef_search)

    # ------------------------------------------------------------------ persistence
    def nbytes(self) -> int:
        """Serialised size in bytes (counted as it is written, without a copy of the index in memory)."""
        faiss, size = _faiss(), [0]
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(lambda buf: size.__setitem__(0, size[0] + len(buf))))
        return size[0]

    def save(self, directory: str | Path, filename: str = INDEX_FILE) -> Path:
        """Write the index into ``directory`` (a folder the caller writes atomically)."""
        path = Path(directory) / filename
        _faiss().write_index(self.index, str(path))
        return path

    def info(self) -> dict:
        """Fields for the manifest."""
        return {"index_type": self.index_type, "metric": self.metric, "params": self.params, "ntotal": self.ntotal, "dim": self.dim}

    @classmethod
    def load(cls, directory: str | Path, info: dict, filename: str = INDEX_FILE) -> "FaissIndex":
        """Read an index saved by :meth:`save`; ``info`` is what :meth:`info` gave (from the manifest)."""
        faiss = _faiss()
        path = Path(directory) / filename
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptedError(f"faiss could not read {path} ({str(exc).strip().splitlines()[-1]}); rebuild the index") from exc
        if int(index.ntotal) != int(info["ntotal"]) or int(index.d) != int(info["dim"]):
            raise IndexCorruptedError(
                f"{path} holds {index.ntotal} vectors of dim {index.d}, the manifest says {info['ntotal']} of dim {info['dim']}; rebuild the index"
            )
        out = cls(index, info["index_type"], info["metric"], info.get("params", {}))
        if out.index_type == "hnsw":
            index.hnsw.efSearch = int(out.params.get("ef_search", 128))
        elif out.index_type == "ivfpq":
            out._ivf().nprobe = int(out.params.get("nprobe", 16))
            if out.refined != isinstance(index, faiss.IndexRefine):
                raise IndexCorruptedError(f"{path} and its manifest disagree on refine ({out.params.get('refine')}); "
                                          "rebuild the index")
        return out


def _collect_rows(batches: Iterable[np.ndarray], positions: np.ndarray, n: int, dim: int) -> np.ndarray:
    """The rows at sorted ``positions`` of the concatenated ``batches`` (one pass; only those rows kept)."""
    out = np.empty((positions.shape[0], dim), np.float32)
    start = filled = 0
    for batch in batches:
        x = _check_batch(batch, dim)
        stop = start + x.shape[0]
        lo, hi = np.searchsorted(positions, [start, stop])
        out[filled : filled + hi - lo] = x[positions[lo:hi] - start]
        filled += hi - lo
        start = stop
    if start != n:
        raise ValueError(f"the batches held {start} vectors, {n} were announced")
    return out
