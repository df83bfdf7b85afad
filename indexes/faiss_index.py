"""A thin, checked wrapper around a faiss vector index.

:class:`FaissIndex` builds one of three index types over ``[N, dim]`` float32 vectors and searches it,
returning integer row positions (callers map them to document ids):

- ``"flat"``: exact search (``IndexFlatIP`` / ``IndexFlatL2``); the default.
- ``"hnsw"``: graph search (``IndexHNSWFlat``), fast and near-exact; memory ~ vectors + graph.
- ``"ivfpq"``: inverted lists + product quantisation (``IndexIVFPQ``), compact (``pq_m`` bytes per
  vector at 8 bits) and approximate; trained on a seeded sample of the vectors.

It is saved into a folder the caller owns (the caller wraps it in :func:`attnsift.io.atomic_dir`
and writes the manifest).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from attnsift.errors import IndexCorruptedError, require

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
METRICS = ("ip", "l2")
INDEX_FILE = "index.faiss"


def _faiss() -> Any:
    return require("faiss", "dense", purpose="dense and late-interaction indexes")


def _default_pq_m(dim: int) -> int:
    # About 8 dimensions per sub-quantiser is the usual accuracy / size trade-off; m must divide dim.
    for m in range(max(1, dim // 8), 0, -1):
        if dim % m == 0:
            return m
    return 1


class FaissIndex:
    """A faiss index over row vectors, with its build parameters.

    Use :meth:`build` or :meth:`load`; do not call the constructor directly.
    """

    def __init__(self, index: Any, index_type: str, metric: str, params: dict) -> None:
        self.index = index
        self.index_type = index_type
        self.metric = metric
        self.params = dict(params)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        index_type: str = "flat",
        metric: str = "ip",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        pq_m: int | None = None,
        nbits: int | None = None,
        nprobe: int | None = None,
        train_size: int = 100_000,
        seed: int = 0,
    ) -> "FaissIndex":
        """Build an index over ``vectors`` (``[N, dim]``, converted to float32).

        Parameters
        ----------
        index_type : {"flat", "hnsw", "ivfpq"}
        metric : {"ip", "l2"}
            Inner product (cosine on normalised vectors) or Euclidean distance (scores are then
            negative squared distances, so larger is always better).
        hnsw_m, ef_construction, ef_search : int
            HNSW graph degree and beam widths.
        nlist, pq_m, nbits, nprobe : int, optional
            IVF-PQ lists, sub-quantisers (must divide dim), bits per code, lists probed per query.
            Defaults scale with N: ``nlist ~ 4 sqrt(N)`` (at most N / 39), ``pq_m ~ dim / 8``,
            ``nbits = 8`` (fewer for tiny collections), ``nprobe = min(nlist, 16)``.
        train_size : int
            At most this many vectors (a seeded sample) train IVF-PQ.
        """
        faiss = _faiss()
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"vectors must be a non-empty [N, dim] array, got shape {x.shape}; is the corpus empty?")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinite values; the encoder produced invalid output")
        n, d = x.shape
        fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        params: dict[str, Any] = {}
        if index_type == "flat":
            index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
            index.add(x)
        elif index_type == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, fmetric)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
            index.add(x)
            params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        else:
            pq_m = pq_m or _default_pq_m(d)
            if d % pq_m:
                raise ValueError(f"pq_m must divide the dimension {d}, got {pq_m}")
            if nlist is None:
                nlist = int(max(1, min(4 * math.sqrt(n), n // 39)))
            if nbits is None:
                # PQ trains 2**nbits centroids per sub-space: it needs at least that many vectors.
                nbits = int(max(1, min(8, math.floor(math.log2(max(2, n // 4))))))
            nprobe = nprobe or min(nlist, 16)
            if nlist > n:
                raise ValueError(f"nlist ({nlist}) exceeds the number of vectors ({n}); use fewer lists or a flat index")
            quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, nbits, fmetric)
            rng = np.random.default_rng(seed)
            train = x if n <= train_size else x[np.sort(rng.choice(n, train_size, replace=False))]
            index.train(train)
            index.add(x)
            index.nprobe = nprobe
            params = {"nlist": nlist, "pq_m": pq_m, "nbits": nbits, "nprobe": nprobe, "train_size": int(train.shape[0]), "seed": seed}
        return cls(index, index_type, metric, params)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows for each query.

        Parameters
        ----------
        queries : np.ndarray
            ``[B, dim]``.
        k : int
            Capped at the number of indexed vectors.

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
        scores, pos = self.index.search(q, k)
        if self.metric == "l2":
            scores = -scores
        return scores.astype(np.float32, copy=False), pos.astype(np.int64, copy=False)

    def nbytes(self) -> int:
        """Serialised size in bytes."""
        return int(_faiss().serialize_index(self.index).nbytes)

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
            index.nprobe = int(out.params.get("nprobe", 16))
        return out

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall at query time (IVF ``nprobe``, HNSW ``efSearch``)."""
        if nprobe is not None:
            if self.index_type != "ivfpq":
                raise ValueError(f"nprobe applies to an ivfpq index, this one is {self.index_type!r}")
            self.index.nprobe = int(nprobe)
            self.params["nprobe"] = int(nprobe)
        if ef_search is not None:
            if self.index_type != "hnsw":
                raise ValueError(f"ef_search applies to an hnsw index, this one is {self.index_type!r}")
            self.index.hnsw.efSearch = int(ef_search)
            self.params["ef_search"] = int(ef_search)
