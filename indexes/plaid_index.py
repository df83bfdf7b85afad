"""A compressed multi-vector (token) index in the manner of PLAID / ColBERTv2.

Every token vector ``x`` (L2-normalised, ``dim`` wide) is stored as

- ``code``: the id of its nearest centroid ``c`` (spherical k-means over a seeded sample of the token
  vectors, faiss), ``uint16`` up to 65,536 centroids;
- ``residual``: ``x - c`` quantised to ``nbits`` bits per dimension, with per-dimension bucket cutoffs
  (the ``1/2^b .. (2^b-1)/2^b`` quantiles of the sample's residuals in that dimension) and bucket
  weights (the midpoint quantiles of each bucket), packed ``8 / nbits`` dimensions per byte.

Bytes per token: ``2 + dim * nbits / 8 + 1`` (all-MiniLM-L6-v2, 384 dims, 2 bits: 99 bytes, against 768
for float16 vectors; the last byte is the renormalisation scale below), plus an inverted list
``centroid -> documents`` (``int32`` per distinct (centroid, document) pair, about 2 bytes per token on
SciFact), plus the centroids (``ncentroids * dim *
4`` bytes, shared by the whole corpus). A token decompresses as ``c + weights[bucket]``, renormalised
(:meth:`PlaidIndex.gather`); the renormalisation factor ``1 / ||c + r||`` is stored per token as one byte
(``scales``, linear over the corpus's range, ~0.1% steps), so :meth:`PlaidIndex.exact_scores` scores
``q . x = (q . c + q . r) / ||c + r||`` from the query's centroid scores and a bfloat16 product with the
residuals, never building float32 tokens: 99 bytes per token.

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
    "scales": "plaid_scales.npy",
    "scale_range": "plaid_scale_range.npy",
}
NBITS = (1, 2, 4)
#: Tokens assigned / quantised per step while building (memory stays bounded; results do not depend on it).
_CHUNK = 32_768


def default_ncentroids(num_tokens: int) -> int:
    """``4 sqrt(T)`` centroids for ``T`` tokens rounded to the nearest power of two (in log scale: 4,096 for
    SciFact's 1.23M tokens and NFCorpus's 0.87M), capped at ``T / 8`` so every centroid has training points,
    and at 65,536. (Until 2026-12 the power of two below: 2,048 for NFCorpus, nDCG@10 0.0084 lower.)"""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    k = 2 ** int(round(math.log2(max(1.0, 4 * math.sqrt(num_tokens)))))
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


def _word_table(lut: np.ndarray) -> tuple[np.ndarray, int]:
    """The residual table in bfloat16, one byte's values as 4-, 8- or 16-byte words (``[P * 256 * w]`` int32 or
    int64, ``w`` words per byte), so decoding is one ``np.take`` of plain integers."""
    import torch

    b16 = torch.from_numpy(lut).to(torch.bfloat16).view(torch.int16).numpy()  # [P*256, per]
    if b16.shape[1] == 2:
        return np.ascontiguousarray(b16).view(np.int32).reshape(-1), 1
    return np.ascontiguousarray(b16).view(np.int64).reshape(-1), b16.shape[1] // 4


def _segment_max_sum(m: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``m`` ``[t, Lq]`` with documents as row segments from ``starts`` (``[n]``, non-empty segments) -> ``[n]``:
    the sum over query tokens of each segment's max (MaxSim)."""
    return np.maximum.reduceat(m, starts, axis=0).sum(1, dtype=np.float32)


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
    scales, scale_range : np.ndarray, optional
        ``[T]`` uint8 and ``[2]`` float32 ``(lo, hi)``: token ``t``'s ``1 / ||c + r||`` is
        ``lo + (hi - lo) * scales[t] / 255`` [None: computed from the tokens].
    """

    def __init__(self, centroids: np.ndarray, codes: np.ndarray, residuals: np.ndarray, offsets: np.ndarray,
                 cutoffs: np.ndarray, weights: np.ndarray, nbits: int, ivf_offsets: np.ndarray,
                 ivf_docs: np.ndarray, scales: np.ndarray | None = None,
                 scale_range: np.ndarray | None = None) -> None:
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
        self._words, self._wpb = _word_table(self._lut)
        self._doc_cells: tuple[np.ndarray, np.ndarray] | None = None
        if scales is None or scale_range is None:
            scales, scale_range = self._quantise_scales()
        if scales.shape != (t,) or scales.dtype != np.uint8 or np.shape(scale_range) != (2,):
            raise ValueError(f"scales must be [{t}] uint8 and scale_range [2], got {scales.shape} {scales.dtype} / "
                             f"{np.shape(scale_range)}")
        self.scales = scales
        self.scale_range = np.asarray(scale_range, np.float32)

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

    def _unnormalised(self, rows: np.ndarray) -> np.ndarray:
        """``c + r`` at ``rows`` (``[t, dim]`` float32, not renormalised)."""
        packed = self.residuals[rows]  # [t, P] uint8
        p = packed.shape[1]
        idx = packed.astype(np.int32) + (np.arange(p, dtype=np.int32) * 256)[None, :]  # [t, P]
        x = self._lut[idx].reshape(rows.size, self.dim)  # [t, dim] residuals
        x += self.centroids[self.codes[rows]]
        return x

    def _quantise_scales(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-token ``1 / ||c + r||`` as uint8 over its range (in chunks of tokens)."""
        t = self.num_tokens
        inv = np.empty(t, np.float32)
        for s in range(0, t, _CHUNK):
            x = self._unnormalised(np.arange(s, min(t, s + _CHUNK)))
            inv[s : s + x.shape[0]] = 1.0 / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
        lo, hi = (float(inv.min()), float(inv.max())) if t else (1.0, 1.0)
        step = (hi - lo) / 255 if hi > lo else 1.0
        return np.rint((inv - lo) / step).astype(np.uint8), np.array([lo, hi], np.float32)

    def inverse_norms(self, rows: np.ndarray) -> np.ndarray:
        """The stored ``1 / ||c + r||`` of the tokens at ``rows`` (``[t]`` float32)."""
        lo, hi = (float(x) for x in self.scale_range)
        return (lo + (hi - lo) / 255 * self.scales[rows].astype(np.float32)).astype(np.float32)

    def decompress(self, rows: np.ndarray) -> np.ndarray:
        """Token vectors at ``rows``: centroid plus dequantised residual, renormalised; ``[t, dim]`` float32."""
        x = self._unnormalised(np.asarray(rows, dtype=np.int64))
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def residuals_bf16(self, rows: np.ndarray) -> Any:
        """The dequantised residuals at ``rows`` as a ``[t, dim]`` bfloat16 torch tensor (one integer gather
        per packed byte)."""
        import torch

        packed = self.residuals[rows]  # [t, P]
        idx = packed.astype(np.int32)
        idx += (np.arange(packed.shape[1], dtype=np.int32) * 256)[None, :]
        if self._wpb > 1:
            idx = (idx[:, :, None] * self._wpb + np.arange(self._wpb, dtype=np.int32)).reshape(idx.shape[0], -1)
        words = np.take(self._words, idx)  # [t, P * w]
        return torch.from_numpy(words.view(np.int16).reshape(rows.size, self.dim)).view(torch.bfloat16)

    def doc_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Each document's distinct centroids, ``(offsets [N+1] int64, cells [E] int32)``: the inverted lists
        transposed, built in memory on first use (not stored)."""
        if self._doc_cells is None:
            cells = np.repeat(np.arange(self.ncentroids, dtype=np.int32), np.diff(self.ivf_offsets))
            order = np.argsort(self.ivf_docs, kind="stable")
            offs = np.concatenate([[0], np.cumsum(np.bincount(self.ivf_docs, minlength=self.num_docs))])
            self._doc_cells = (offs.astype(np.int64), np.ascontiguousarray(cells[order]))
        return self._doc_cells

    def centroid_interaction(self, centroid_scores: np.ndarray, docs: np.ndarray, impl: str = "numpy") -> np.ndarray:
        """PLAID's centroid interaction over all of each document's tokens: ``sum over query tokens of max over
        the document's distinct centroids c of S[q, c]`` (``centroid_scores`` ``S``: ``[Lq, K]``); ``[n]`` float32,
        0 for a document without tokens. ``impl``: ``numpy``, ``numba`` or ``auto`` (:mod:`.plaid_kernel`)."""
        from attnsift.indexes import plaid_kernel

        if plaid_kernel.resolve(impl) != "numpy":
            return plaid_kernel.centroid_interaction(self, plaid_kernel.transposed(centroid_scores),
                                                     centroid_scores.shape[0], docs)
        offs, cells = self.doc_cells()
        docs = np.asarray(docs, dtype=np.int64)
        starts, lens = offs[docs], offs[docs + 1] - offs[docs]
        out = np.zeros(docs.size, np.float32)
        some = lens > 0
        if not some.any():
            return out
        starts, lens = starts[some], lens[some]
        seg = np.concatenate([[0], np.cumsum(lens)])
        picked = cells[np.repeat(starts - seg[:-1], lens) + np.arange(seg[-1])]
        s_t = np.ascontiguousarray(centroid_scores.T)  # [K, Lq]: row gathers are the cheap ones
        out[some] = _segment_max_sum(s_t[picked], seg[:-1])
        return out

    def exact_scores(self, query_tokens: np.ndarray, centroid_scores: np.ndarray, docs: np.ndarray,
                     impl: str = "numpy") -> np.ndarray:
        """MaxSim of one query against the decompressed, renormalised tokens of ``docs``, without building them:
        ``q . x = (S[q, code] + q . r) * scale``, with ``q . r`` a bfloat16 product (float32 sums) and the stored
        per-token scale; ``[n]`` float32, 0 for a document without tokens.

        Parameters
        ----------
        query_tokens : np.ndarray
            ``[Lq, dim]`` float32.
        centroid_scores : np.ndarray
            ``[Lq, K]`` float32, ``query_tokens @ centroids.T``.
        docs : np.ndarray
            ``[n]`` document positions.
        impl : {"numpy", "numba", "int16", "auto"}
            ``numba``: :func:`.plaid_kernel.exact_scores` (float32 throughout, no bfloat16 rounding); ``int16``:
            the same from an int16 table (within :func:`.plaid_kernel.int16_bound`).
        """
        import torch

        from attnsift.indexes import plaid_kernel, plaid_kernel16

        if (cpu := plaid_kernel.resolve(impl)) != "numpy":
            kernels = plaid_kernel16 if cpu == "int16" else plaid_kernel
            return kernels.exact_scores(self, query_tokens, plaid_kernel.transposed(centroid_scores), docs)
        rows, offs = self.token_positions(docs)
        out = np.zeros(offs.size - 1, np.float32)
        if rows.size == 0:
            return out
        q = torch.from_numpy(np.ascontiguousarray(query_tokens, dtype=np.float32)).to(torch.bfloat16)
        m = (self.residuals_bf16(rows) @ q.T).float().numpy()  # [t, Lq]
        m += np.ascontiguousarray(centroid_scores.T)[self.codes[rows]]
        m *= self.inverse_norms(rows)[:, None]
        some = np.diff(offs) > 0  # an empty document owns no row
        out[some] = _segment_max_sum(m, offs[:-1][some])
        return out

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decompressed token vectors of ``docs`` as ``([t, dim] float32, offsets [n+1] int64)`` (as
        :meth:`TokenIndex.gather <attnsift.indexes.token_index.TokenIndex.gather>`)."""
        rows, offs = self.token_positions(docs)
        if rows.size == 0:
            return np.zeros((0, self.dim), np.float32), offs
        return self.decompress(rows), offs

    def bytes_per_token(self) -> dict[str, float]:
        """Bytes per token: ``vectors`` (code + packed residual + scale), ``ivf`` (inverted lists), ``shared``
        (centroids, buckets, offsets, amortised over the tokens) and ``total``."""
        t = max(1, self.num_tokens)
        vectors = self.codes.itemsize + self.residuals.shape[1]
        ivf = (self.ivf_docs.nbytes + self.ivf_offsets.nbytes) / t
        vectors += self.scales.itemsize
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
                  "ivf_offsets": self.ivf_offsets, "ivf_docs": self.ivf_docs,
                  "scales": self.scales, "scale_range": self.scale_range}
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
                if name.startswith("scale") and not (directory / file).exists():
                    arrays[name] = None  # written before the scales were stored: computed below
                    continue
                big = mmap and name in ("codes", "residuals", "scales")
                arrays[name] = np.load(directory / file, mmap_mode="r" if big else None, allow_pickle=False)
            t, dim, k, nbits = (int(info[f]) for f in ("num_tokens", "dim", "ncentroids", "nbits"))
        except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            raise IndexCorruptedError(f"plaid arrays in {directory} are unreadable ({exc}); rebuild the index") from exc
        if arrays["codes"].shape != (t,) or arrays["centroids"].shape != (k, dim):
            raise IndexCorruptedError(f"{directory}: plaid arrays do not match the manifest ({t} tokens, {k} x {dim} "
                                      "centroids); rebuild the index")
        try:
            return cls(arrays["centroids"], arrays["codes"], arrays["residuals"], arrays["offsets"],
                       arrays["cutoffs"], arrays["weights"], nbits, arrays["ivf_offsets"], arrays["ivf_docs"],
                       arrays["scales"], arrays["scale_range"])
        except ValueError as exc:
            raise IndexCorruptedError(f"{directory}: {exc}; rebuild the index") from exc
