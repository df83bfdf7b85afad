"""Late interaction over a compressed token index, in the manner of PLAID (Santhanam et al., 2022).

The index (:class:`attnsift.indexes.plaid_index.PlaidIndex`) stores each token as a centroid id plus a
2-bit residual per dimension. A query is answered in three steps, each over fewer documents:

1. **centroid interaction**: the query's token vectors against all centroids (``S = Q C^T``,
   ``[Lq, K]``, one small matrix product); each query token probes its ``ncells`` best centroids;
2. **candidate generation and pruning**: the inverted lists of the probed centroids give the candidate
   documents, each with an approximate score ``sum over query tokens of max over the probed centroids
   the document holds of S[q, c]`` (a query token none of whose probed centroids the document holds
   adds the lowest probed score of that token: the document's true centroid score is at most that);
   the ``candidates`` best by this score are kept;
3. **exact MaxSim** on those candidates' decompressed token vectors (centroid + dequantised residual),
   by :func:`attnsift.attention_kernels.maxsim.api.maxsim` (Triton on a GPU, the PyTorch reference on
   the CPU), and the top ``k`` by that score.

Every step is per query, so results do not depend on how queries are batched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from attnsift.config import Config, config_from_options

#: The index modes of :class:`~attnsift.retrieval.late_interaction.LateInteractionRetriever`.
INDEX_MODES = ("exhaustive", "plaid")


def _check_int(owner: Config, name: str, minimum: int) -> None:
    value = getattr(owner, name)
    if value is not None and value < minimum:
        raise ValueError(f"{type(owner).__name__}.{name} must be an integer >= {minimum}, got {value}")


@dataclass(frozen=True)
class PlaidConfig(Config):
    """Options of the compressed late-interaction index (``index="plaid"``).

    Attributes
    ----------
    ncentroids : int or None
        k-means centroids [None: ``2^floor(log2(4 sqrt(T)))`` for ``T`` tokens, 4,096 on SciFact].
    nbits : {1, 2, 4}
        Bits per dimension of each residual [2: ``2 + dim / 4`` bytes per token, 98 at dim 384].
    kmeans_sample : int or None
        Tokens sampled to train k-means and the residual buckets [None: 32 per centroid, >= 16,384].
    kmeans_iters : int
        k-means iterations [8].
    seed : int
        Seeds the sample and k-means [0].
    ncells : int or None
        Centroids probed per query token [None: 4, 8 above 16,384 centroids].
    candidates : int or None
        Documents rescored by exact MaxSim (always at least ``k``) [None: ``2 sqrt(N)`` clamped to
        [64, 512]: 144 on SciFact].

    Only ``ncells`` and ``candidates`` (:data:`SEARCH_OPTIONS`) apply to a loaded index.
    """

    SEARCH_OPTIONS = ("ncells", "candidates")

    ncentroids: int | None = None
    nbits: int = 2
    kmeans_sample: int | None = None
    kmeans_iters: int = 8
    seed: int = 0
    ncells: int | None = None
    candidates: int | None = None

    def validate(self) -> None:
        if self.nbits not in (1, 2, 4):
            raise ValueError(f"PlaidConfig.nbits must be 1, 2 or 4 (bits per residual dimension), got {self.nbits}")
        for name in ("ncentroids", "kmeans_sample", "kmeans_iters", "ncells", "candidates"):
            _check_int(self, name, 1)
        if self.ncentroids is not None and self.ncentroids > 65_536:
            raise ValueError(f"PlaidConfig.ncentroids must be at most 65536 (codes are 2 bytes), got {self.ncentroids}")
        if self.kmeans_sample is not None and self.ncentroids is not None and self.kmeans_sample < self.ncentroids:
            raise ValueError(f"PlaidConfig.kmeans_sample ({self.kmeans_sample}) must be at least ncentroids "
                             f"({self.ncentroids}): k-means needs a point per centroid")

    def build_options(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in ("ncentroids", "nbits", "kmeans_sample", "kmeans_iters", "seed")}

    def search_options(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.SEARCH_OPTIONS}


#: Every option name :class:`PlaidConfig` takes.
PLAID_OPTIONS = ("ncentroids", "nbits", "kmeans_sample", "kmeans_iters", "seed", "ncells", "candidates")


def split_plaid_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` -> (the :class:`PlaidConfig` ones, the rest)."""
    return ({k: v for k, v in options.items() if k in PLAID_OPTIONS},
            {k: v for k, v in options.items() if k not in PLAID_OPTIONS})


def plaid_config(options: Mapping[str, Any] | None = None, base: PlaidConfig | None = None) -> PlaidConfig:
    """A checked :class:`PlaidConfig` from loose options (strings allowed)."""
    return config_from_options(PlaidConfig, dict(options or {}), base=base)


def default_ncells(ncentroids: int) -> int:
    """Centroids probed per query token: 4, or 8 above 16,384 centroids (finer cells hold fewer documents)."""
    return 8 if ncentroids > 16_384 else 4


def default_candidates(num_docs: int) -> int:
    """Documents rescored exactly: ``2 sqrt(N)`` clamped to [64, 512] (at most ``N``)."""
    return int(min(num_docs, max(64, min(512, round(2 * math.sqrt(num_docs))))))


class PlaidSearcher:
    """Candidate generation over a :class:`~attnsift.indexes.plaid_index.PlaidIndex` (steps 1-2 above).

    Parameters
    ----------
    index : PlaidIndex
    ncells, candidates : int or None
        As in :class:`PlaidConfig` (None: the defaults for this index).
    """

    def __init__(self, index: Any, ncells: int | None = None, candidates: int | None = None) -> None:
        self.index = index
        self.ncells = int(min(index.ncentroids, ncells or default_ncells(index.ncentroids)))
        self.candidates = int(candidates or default_candidates(index.num_docs))

    def __repr__(self) -> str:
        return f"PlaidSearcher(ncells={self.ncells}, candidates={self.candidates})"

    def centroid_scores(self, query_tokens: np.ndarray) -> np.ndarray:
        """``[Lq, K]`` float32: each query token against each centroid."""
        q = np.ascontiguousarray(query_tokens, dtype=np.float32)
        return q @ self.index.centroids.T

    def approximate(self, query_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate documents with their centroid-interaction scores (step 2).

        Parameters
        ----------
        query_tokens : np.ndarray
            ``[Lq, dim]``.

        Returns
        -------
        docs : np.ndarray
            ``[n]`` int64 document positions, sorted.
        scores : np.ndarray
            ``[n]`` float64 approximate scores (up to a per-query constant).
        """
        lq = query_tokens.shape[0]
        if lq == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        s = self.centroid_scores(query_tokens)  # [Lq, K]
        nc = self.ncells
        part = np.argpartition(-s, nc - 1, axis=1)[:, :nc] if nc < s.shape[1] else np.tile(np.arange(nc), (lq, 1))
        ps = np.take_along_axis(s, part, axis=1)  # [Lq, nc]
        # Best cell first within each query token (ties: lower centroid id), so a document's first
        # entry per token is its best probed centroid.
        order = np.lexsort((part, -ps), axis=1)
        cells = np.take_along_axis(part, order, axis=1)  # [Lq, nc]
        cscore = np.take_along_axis(ps, order, axis=1).astype(np.float64)  # [Lq, nc]
        floor = cscore[:, -1]  # [Lq] the lowest probed score: what an absent document is credited
        docs, owner = self.index.cell_documents(cells.reshape(-1))  # [E], [E] (position in cells)
        if docs.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        cand, local = np.unique(docs, return_inverse=True)
        row = owner // nc
        key = row * cand.size + local
        _, first = np.unique(key, return_index=True)  # stable: the first entry of each (token, doc) is its max
        gain = cscore.reshape(-1)[owner[first]] - floor[row[first]]
        approx = np.bincount(local[first], weights=gain, minlength=cand.size) + floor.sum()
        return cand.astype(np.int64), approx

    def shortlist(self, query_tokens: np.ndarray, k: int) -> np.ndarray:
        """The ``max(candidates, k)`` best candidates by approximate score (ties: lower position), as positions."""
        docs, approx = self.approximate(query_tokens)
        keep = max(self.candidates, k)
        if docs.size <= keep:
            return docs
        top = np.lexsort((docs, -approx))[:keep]
        return np.sort(docs[top])

    def search(self, query_tokens: np.ndarray, k: int, impl: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents by exact MaxSim over the decompressed shortlist (steps 1-3).

        Parameters
        ----------
        query_tokens : np.ndarray
            ``[Lq, dim]`` unit-norm query token vectors.
        k : int
        impl : {"auto", "reference", "triton"}
            The MaxSim implementation (:func:`attnsift.attention_kernels.maxsim.api.maxsim`).

        Returns
        -------
        docs : np.ndarray
            ``[<= k]`` int64 document positions, best first (ties: lower position).
        scores : np.ndarray
            ``[<= k]`` float32 MaxSim scores.
        """
        import torch

        from attnsift.attention_kernels.maxsim.api import maxsim

        cand = self.shortlist(query_tokens, k)
        if cand.size == 0:
            return cand, np.zeros(0, np.float32)
        toks, offs = self.index.gather(cand)
        q = torch.from_numpy(np.ascontiguousarray(query_tokens, dtype=np.float32))[None]  # [1, Lq, D]
        s = maxsim(q, torch.from_numpy(toks), torch.from_numpy(offs), impl=impl)[0].cpu().numpy()  # [n]
        top = np.lexsort((cand, -s))[:k]
        return cand[top], s[top]
