"""A compressed multi-vector (token) index in the manner of PLAID / ColBERTv2.

Every token vector ``x`` (L2-normalised, ``dim`` wide) is stored as

- ``code``: the id of its nearest centroid ``c`` (spherical k-means over a seeded sample of the token
  vectors, faiss), ``uint16`` up to 65,536 centroids;
- ``residual``: ``x - c`` quantised to ``nbits`` bits per dimension, with per-dimension bucket cutoffs
  (the ``1/2^b .. (2^b-1)/2^b`` quantiles of the sample's residuals in that dimension) and bucket
  weights (the midpoint quantiles of each bucket), packed ``8 / nbits`` dimensions per byte.

Bytes per token: ``2 + dim * nbits / 8`` (all-MiniLM-L6-v2, 384 dims, 2 bits: 98 bytes, against 768
for float16 vectors), plus an inverted list ``centroid -> documents`` (``int32`` per distinct
(centroid, document) pair, about 2 bytes per token on SciFact), plus the centroids (``ncentroids * dim *
4`` bytes, shared by the whole corpus). A token decompresses as ``c + weights[bucket]``, renormalised
(:meth:`PlaidIndex.gather`).

Candidate generation and scoring live in :mod:`attnsift.retrieval.plaid`.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from attnsift.errors import IndexCorruptedError, require

logger = logging.getLogger(__name__)

#: The files :meth:`PlaidIndex.save` writes (checksummed by the caller's manifest).
FILES = {
    "centroids": "plaid_centroids.npy",
    "codes": "plaid_codes.npy",
    "residuals": "plaid_residuals.npy",
    "offsets": "plaid_offsets.npy",
    "cutoffs": "plaid_cutoffs.npy",
    "weights": "plaid_weights.npy",
    "ivf_offsets": "plaid_ivf_offsets.npy",
    "ivf_docs": "plaid_ivf_docs.npy",
}
NBITS = (1, 2, 4)
#: Tokens assigned / quantised per step while building (memory stays bounded; results do not depend on it).
_CHUNK = 32_768


def default_ncentroids(num_tokens: int) -> int:
    """``2^floor(log2(4 sqrt(T)))`` centroids for ``T`` tokens (4,096 for SciFact's 1.23M tokens), capped at
    ``T / 8`` so every centroid has training points, and at 65,536."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    k = 2 ** int(math.floor(math.log2(max(1.0, 4 * math.sqrt(num_tokens)))))
    return int(max(1, min(k, num_tokens // 8, 65_536)))


def default_kmeans_sample(ncentroids: int, num_tokens: int) -> int:
    """Tokens sampled to train k-means and the buckets: 32 per centroid, at least 16,384, at most ``T``."""
    return int(min(num_tokens, max(16_384, 32 * ncentroids)))


def _pack(buckets: np.ndarray, nbits: int) -> np.ndarray:
    """``[n, dim]`` bucket ids in ``[0, 2^nbits)`` -> ``[n, dim * nbits / 8]`` uint8 (dimension ``i`` of a
    byte at bit ``i * nbits``)."""
    per = 8 // nbits
    b = buckets.astype(np.uint8).reshape(buckets.shape[0], -1, per)  # [n, P, per]
    out = np.zeros(b.shape[:2], np.uint8)
    for i in range(per):
        out |= b[:, :, i] << np.uint8(i * nbits)
    return out


def _lut(weights: np.ndarray, nbits: int) -> np.ndarray:
    """``[P * 256, 8 / nbits]`` float32: row ``j * 256 + v`` is byte ``v``'s residual values at byte position ``j``."""
    dim = weights.shape[0]
    per, mask = 8 // nbits, (1 << nbits) - 1
    v = np.arange(256)
    ids = np.stack([(v >> (i * nbits)) & mask for i in range(per)], axis=1)  # [256, per]
    w = weights.reshape(dim // per, per, -1)  # [P, per, 2^b]
    lut = np.stack([w[:, i, :][:, ids[:, i]] for i in range(per)], axis=2)  # [P, 256, per]
    return np.ascontiguousarray(lut.reshape(-1, per), dtype=np.float32)


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (inner product) of each row of ``x``, in fixed chunks: the best 4 by a bfloat16
    product (4x faster than float32 on CPUs with bf16 units), then the best of those in float32."""
    import torch

    c32 = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))  # [K, dim]
    c16 = c32.to(torch.bfloat16)
    top = min(4, c32.shape[0])
    out = np.empty(x.shape[0], np.int64)
    for s in range(0, x.shape[0], _CHUNK):
        xs = torch.from_numpy(np.ascontiguousarray(x[s : s + _CHUNK], dtype=np.float32))  # [n, dim]
        cand = (xs.to(torch.bfloat16) @ c16.T).topk(top, dim=1).indices  # [n, top]
        exact = torch.einsum("nd,ntd->nt", xs, c32[cand])  # [n, top]
        out[s : s + _CHUNK] = cand.gather(1, exact.argmax(1, keepdim=True))[:, 0].numpy()
    return out


class PlaidIndex:
    """Token vectors compressed to a centroid id plus ``nbits``-bit residuals, with an inverted list
    ``centroid -> documents``.

    Use :meth:`build` or :meth:`load`.

    Parameters
    ----------
    centroids : np.ndarray
        ``[K, dim]`` float32, unit norm.
    codes : np.ndarray
        ``[T]`` centroid id per token (uint16 or int32).
    residuals : np.ndarray
        ``[T, dim * nbits / 8]`` uint8, packed bucket ids.
    offsets : np.ndarray
        ``[N+1]`` int64; document ``i`` owns tokens ``offsets[i]:offsets[i+1]``.
    cutoffs, weights : np.ndarray
        ``[dim, 2^nbits - 1]`` bucket boundaries and ``[dim, 2^nbits]`` bucket values, float32.
    nbits : int
    ivf_offsets, ivf_docs : np.ndarray
        ``[K+1]`` int64 and ``[E]`` int32: centroid ``c``'s documents are
        ``ivf_docs[ivf_offsets[c]:ivf_offsets[c+1]]`` (sorted, distinct).
    """

    def __init__(self, centroids: np.ndarray, codes: np.ndarray, residuals: np.ndarray, offsets: np.ndarray,
                 cutoffs: np.ndarray, weights: np.ndarray, nbits: int, ivf_offsets: np.ndarray,
                 ivf_docs: np.ndarray) -> None:
        if nbits not in NBITS:
            raise ValueError(f"nbits must be one of {NBITS}, got {nbits}")
        k, dim = centroids.shape
        t = codes.shape[0]
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or offsets[-1] != t or (np.diff(offsets) < 0).any():
            raise ValueError(f"offsets must be non-decreasing from 0 to {t} (the token count)")
        if residuals.shape != (t, dim * nbits // 8) or residuals.dtype != np.uint8:
            raise ValueError(f"residuals must be [{t}, {dim * nbits // 8}] uint8, got {residuals.shape} {residuals.dtype}")
        if cutoffs.shape != (dim, 2**nbits - 1) or weights.shape != (dim, 2**nbits):
            raise ValueError(f"bucket cutoffs / weights must be [{dim}, {2**nbits - 1}] / [{dim}, {2**nbits}], "
                             f"got {cutoffs.shape} / {weights.shape}")
        if ivf_offsets.shape != (k + 1,) or ivf_offsets[0] != 0 or ivf_offsets[-1] != ivf_docs.shape[0]:
            raise ValueError(f"ivf_offsets must be [{k + 1}] from 0 to {ivf_docs.shape[0]}")
        if t and (int(codes.max()) >= k or int(codes.min()) < 0):
            raise ValueError(f"codes must lie in [0, {k})")
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.codes = codes
        self.residuals = residuals
        self.offsets = offsets
        self.cutoffs = np.asarray(cutoffs, np.float32)
        self.weights = np.asarray(weights, np.float32)
        self.nbits = int(nbits)
        self.ivf_offsets = np.asarray(ivf_offsets, np.int64)
        self.ivf_docs = ivf_docs
        self._lut = _lut(self.weights, self.nbits)

    def __repr__(self) -> str:
        return (f"PlaidIndex(docs={self.num_docs}, tokens={self.num_tokens}, dim={self.dim}, "
                f"ncentroids={self.ncentroids}, nbits={self.nbits})")

    @property
    def num_docs(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def num_tokens(self) -> int:
        return int(self.codes.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def ncentroids(self) -> int:
        return int(self.centroids.shape[0])

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, tokens: np.ndarray, lengths: np.ndarray, *, ncentroids: int | None = None, nbits: int = 2,
              kmeans_sample: int | None = None, kmeans_iters: int = 8, seed: int = 0) -> "PlaidIndex":
        """Compress ``tokens`` (``[T, dim]``, unit norm) of documents with ``lengths`` (``[N]``, summing to ``T``).

        Parameters
        ----------
        ncentroids : int, optional
            k-means centroids, at most ``T`` [None: :func:`default_ncentroids`]; codes take 2 bytes up to
            65,536 centroids, 4 above.
        nbits : {1, 2, 4}
            Bits per dimension of the residual [2]; ``dim * nbits`` must be a multiple of 8.
        kmeans_sample : int, optional
            Tokens (a seeded sample) that train k-means and the bucket quantiles
            [None: :func:`default_kmeans_sample`].
        kmeans_iters : int
            k-means iterations [8].
        seed : int
            Seeds the sample and k-means.
        """
        faiss = require("faiss", "dense", purpose="the compressed (plaid) late-interaction index")
        lengths = np.asarray(lengths, dtype=np.int64)
        t, dim = tokens.shape
        if lengths.ndim != 1 or lengths.size == 0:
            raise ValueError("lengths must be a non-empty [N] array; is the corpus empty?")
        if (lengths < 0).any() or int(lengths.sum()) != t:
            raise ValueError(f"lengths must be >= 0 and sum to the token count {t}, they sum to {int(lengths.sum())}")
        if t == 0:
            raise ValueError("no document has any token to index (all texts empty?)")
        if nbits not in NBITS or (dim * nbits) % 8:
            raise ValueError(f"nbits must be one of {NBITS} with dim * nbits a multiple of 8 (dim {dim}), got {nbits}")
        k = default_ncentroids(t) if ncentroids is None else int(ncentroids)
        if not 1 <= k <= min(t, 2**31 - 1):
            raise ValueError(f"ncentroids must be in [1, {t}] (the token count), got {k}")
        n_sample = default_kmeans_sample(k, t) if kmeans_sample is None else min(int(kmeans_sample), t)
        if n_sample < k:
            raise ValueError(f"kmeans_sample ({n_sample}) must be at least ncentroids ({k})")
        rng = np.random.default_rng(seed)
        pos = np.sort(rng.choice(t, n_sample, replace=False)) if n_sample < t else np.arange(t)
        sample = np.ascontiguousarray(tokens[pos], dtype=np.float32)  # [S, dim]
        km = faiss.Kmeans(dim, k, niter=kmeans_iters, seed=int(seed), spherical=True, verbose=False,
                          max_points_per_centroid=max(256, n_sample // k + 1), min_points_per_centroid=1)
        km.train(sample)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        # Bucket cutoffs and weights: per-dimension quantiles of the sample's residuals.
        res = sample - centroids[_assign(sample, centroids)]  # [S, dim]
        levels = 2**nbits
        cutoffs = np.quantile(res, np.arange(1, levels) / levels, axis=0).T.astype(np.float32)  # [dim, 2^b - 1]
        weights = np.quantile(res, (np.arange(levels) + 0.5) / levels, axis=0).T.astype(np.float32)  # [dim, 2^b]
        del res, sample
        code_dtype = np.uint16 if k <= 65_536 else np.int32
        codes = np.empty(t, code_dtype)
        residuals = np.empty((t, dim * nbits // 8), np.uint8)
        for s in range(0, t, _CHUNK):
            x = np.asarray(tokens[s : s + _CHUNK], dtype=np.float32)
            c = _assign(x, centroids)
            codes[s : s + _CHUNK] = c
            r = x - centroids[c]  # [n, dim]
            buckets = np.zeros(r.shape, np.uint8)
            for j in range(levels - 1):
                buckets += r > cutoffs[None, :, j]
            residuals[s : s + _CHUNK] = _pack(buckets, nbits)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ivf_offsets, ivf_docs = cls._inverted_lists(codes, offsets, k)
        return cls(centroids, codes, residuals, offsets, cutoffs, weights, nbits, ivf_offsets, ivf_docs)

    @staticmethod
    def _inverted_lists(codes: np.ndarray, offsets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = offsets.size - 1
        doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))  # [T]
        pairs = np.unique(codes.astype(np.int64) * n + doc)  # distinct (centroid, document), sorted
        counts = np.bincount(pairs // n, minlength=k)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), (pairs % n).astype(np.int32)

    # ------------------------------------------------------------------ reading
    def cell_documents(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The documents of several centroids' inverted lists, concatenated.

        Returns
        -------
        docs : np.ndarray
            ``[E]`` int32 document positions.
        owner : np.ndarray
            ``[E]`` int64: the position in ``cells`` each entry comes from.
        """
        cells = np.asarray(cells, dtype=np.int64)
        starts, ends = self.ivf_offsets[cells], self.ivf_offsets[cells + 1]
        lens = ends - starts
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        owner = np.repeat(np.arange(cells.size), lens)
        within = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        return self.ivf_docs[starts[owner] + within], owner

    def token_positions(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token rows of ``docs`` (``[t]`` int64) and the packed offsets (``[n+1]`` int64)."""
        docs = np.asarray(docs, dtype=np.int64)
        starts, ends = self.offsets[docs], self.offsets[docs + 1]
        lens = ends - starts
        total = int(lens.sum())
        offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        if total == 0:
            return np.zeros(0, np.int64), offs
        return np.repeat(starts - offs[:-1], lens) + np.arange(total), offs

    def decompress(self, rows: np.ndarray) -> np.ndarray:
        """Token vectors at ``rows``: centroid plus dequantised residual, renormalised; ``[t, dim]`` float32."""
        rows = np.asarray(rows, dtype=np.int64)
        per = 8 // self.nbits
        packed = self.residuals[rows]  # [t, P] uint8
        p = packed.shape[1]
        idx = packed.astype(np.int32) + (np.arange(p, dtype=np.int32) * 256)[None, :]  # [t, P]
        x = self._lut[idx].reshape(rows.size, p * per)  # [t, dim] residuals
        x += self.centroids[self.codes[rows]]
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decompressed token vectors of ``docs`` as ``([t, dim] float32, offsets [n+1] int64)`` (as
        :meth:`TokenIndex.gather <attnsift.indexes.token_index.TokenIndex.gather>`)."""
        rows, offs = self.token_positions(docs)
        if rows.size == 0:
            return np.zeros((0, self.dim), np.float32), offs
        return self.decompress(rows), offs

    def bytes_per_token(self) -> dict[str, float]:
        """Bytes per token: ``vectors`` (code + packed residual), ``ivf`` (inverted lists), ``shared``
        (centroids, buckets, offsets, amortised over the tokens) and ``total``."""
        t = max(1, self.num_tokens)
        vectors = self.codes.itemsize + self.residuals.shape[1]
        ivf = (self.ivf_docs.nbytes + self.ivf_offsets.nbytes) / t
        shared = (self.centroids.nbytes + self.cutoffs.nbytes + self.weights.nbytes + self.offsets.nbytes) / t
        return {"vectors": float(vectors), "ivf": ivf, "shared": shared, "total": vectors + ivf + shared}

    def bytes_per_doc(self) -> dict[str, float]:
        """Average bytes per document (as :meth:`TokenIndex.bytes_per_doc`): ``vectors``, ``ann`` (the inverted
        lists and the shared arrays) and ``total``."""
        b, tpd = self.bytes_per_token(), self.num_tokens / max(1, self.num_docs)
        return {"vectors": b["vectors"] * tpd, "ann": (b["ivf"] + b["shared"]) * tpd, "total": b["total"] * tpd,
                "tokens_per_doc": tpd}

    # ------------------------------------------------------------------ persistence
    def info(self) -> dict[str, Any]:
        return {"kind": "plaid", "num_docs": self.num_docs, "num_tokens": self.num_tokens, "dim": self.dim,
                "ncentroids": self.ncentroids, "nbits": self.nbits, "pairs": int(self.ivf_docs.shape[0])}

    def save(self, directory: str | Path) -> dict:
        """Write the arrays into ``directory``; returns :meth:`info` for the manifest (which checksums them)."""
        directory = Path(directory)
        arrays = {"centroids": self.centroids, "codes": self.codes, "residuals": self.residuals,
                  "offsets": self.offsets, "cutoffs": self.cutoffs, "weights": self.weights,
                  "ivf_offsets": self.ivf_offsets, "ivf_docs": self.ivf_docs}
        for name, arr in arrays.items():
            np.save(directory / FILES[name], np.ascontiguousarray(arr), allow_pickle=False)
        return self.info()

    @classmethod
    def load(cls, directory: str | Path, info: dict, mmap: bool = False) -> "PlaidIndex":
        """Read what :meth:`save` wrote; ``info`` is its return value (from the manifest). ``mmap`` maps the
        codes and residuals from disk."""
        directory = Path(directory)
        arrays = {}
        try:
            for name, file in FILES.items():
                big = mmap and name in ("codes", "residuals")
                arrays[name] = np.load(directory / file, mmap_mode="r" if big else None, allow_pickle=False)
            t, dim, k, nbits = (int(info[f]) for f in ("num_tokens", "dim", "ncentroids", "nbits"))
        except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            raise IndexCorruptedError(f"plaid arrays in {directory} are unreadable ({exc}); rebuild the index") from exc
        if arrays["codes"].shape != (t,) or arrays["centroids"].shape != (k, dim):
            raise IndexCorruptedError(f"{directory}: plaid arrays do not match the manifest ({t} tokens, {k} x {dim} "
                                      "centroids); rebuild the index")
        try:
            return cls(arrays["centroids"], arrays["codes"], arrays["residuals"], arrays["offsets"],
                       arrays["cutoffs"], arrays["weights"], nbits, arrays["ivf_offsets"], arrays["ivf_docs"])
        except ValueError as exc:
            raise IndexCorruptedError(f"{directory}: {exc}; rebuild the index") from exc
