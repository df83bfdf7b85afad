"""Late interaction over a compressed token index, in the manner of PLAID (Santhanam et al., 2022).

The index (:class:`attnsift.indexes.plaid_index.PlaidIndex`) stores each token as a centroid id plus a
2-bit residual per dimension and a one-byte renormalisation scale. A query is answered in four steps,
each over fewer documents:

1. **centroid scores**: the query's token vectors against all centroids (``S = Q C^T``, ``[Lq, K]``,
   float32; on the compiled path computed transposed by
   :func:`attnsift.indexes.plaid_scores.centroid_scores_t`, on the numpy path one torch product); each
   query token probes its ``ncells`` best centroids;
2. **candidate generation and pruning**: the inverted lists of the probed centroids give the candidate
   documents, each with an approximate score ``sum over query tokens of max over the probed centroids
   the document holds of S[q, c]`` (a query token none of whose probed centroids the document holds
   adds the lowest probed score of that token); the ``pool`` best are kept;
3. **centroid interaction** (PLAID's third stage) on the pool: ``sum over query tokens of max over all
   of the document's distinct centroids of S[q, c]``, a gather of ``S``; the ``max(candidates, k)``
   best are kept;
4. **exact MaxSim** on those, on the CPU without decompressing: with numba by the compiled kernels of
   :mod:`attnsift.indexes.plaid_kernel` (per query a table of each residual byte's contribution to each
   query token, summed in vector registers; steps 2 and 3 compiled too): ``impl="numba"`` a float32
   table, ``"int16"`` an int16 one (:mod:`attnsift.indexes.plaid_kernel16`: half the bytes, each score
   within a stated bound, ~1e-4 per query token), ``"auto"`` :data:`~attnsift.indexes.plaid_kernel.AUTO`;
   else on the numpy path
   (:meth:`~attnsift.indexes.plaid_index.PlaidIndex.exact_scores`: ``q . x = (S[q, code] + q . r) *
   scale``, a bfloat16 product with the residuals); with ``impl="reference"`` or ``"triton"``, over
   the decompressed float32 tokens by :func:`attnsift.attention_kernels.maxsim.api.maxsim` (Triton on
   a GPU). Every returned document is scored exactly: the top ``k`` by that score.

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
        Bits per dimension of each residual [2: ``2 + dim / 4 + 1`` bytes per token, 99 at dim 384].
    kmeans_sample : int or None
        Tokens sampled to train k-means and the residual buckets [None: 32 per centroid, >= 16,384].
    kmeans_iters : int
        k-means iterations [8].
    seed : int
        Seeds the sample and k-means [0].
    ncells : int or None
        Centroids probed per query token [None: 4, 8 above 16,384 centroids].
    candidates : int or None
        Documents rescored by exact MaxSim (always at least ``k``) [None: ``3 sqrt(N)`` clamped to
        [64, 512]: 216 on SciFact].
    pool : int or None
        Documents scored by centroid interaction over all their tokens, of which the ``candidates``
        best go on to exact MaxSim (at least ``candidates`` and ``k``) [None: ``4 x candidates``].

    Only ``ncells``, ``candidates`` and ``pool`` (:data:`SEARCH_OPTIONS`) apply to a loaded index.
    """

    SEARCH_OPTIONS = ("ncells", "candidates", "pool")

    ncentroids: int | None = None
    nbits: int = 2
    kmeans_sample: int | None = None
    kmeans_iters: int = 8
    seed: int = 0
    ncells: int | None = None
    candidates: int | None = None
    pool: int | None = None

    def validate(self) -> None:
        if self.nbits not in (1, 2, 4):
            raise ValueError(f"PlaidConfig.nbits must be 1, 2 or 4 (bits per residual dimension), got {self.nbits}")
        for name in ("ncentroids", "kmeans_sample", "kmeans_iters", "ncells", "candidates", "pool"):
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
PLAID_OPTIONS = ("ncentroids", "nbits", "kmeans_sample", "kmeans_iters", "seed", "ncells", "candidates", "pool")


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
    """Documents rescored exactly: ``3 sqrt(N)`` clamped to [64, 512] (at most ``N``). (Until 2026-12
    ``2 sqrt(N)``: SciFact R@100 0.9197 against 0.9317 now, above exhaustive MaxSim's 0.9283.)"""
    return int(min(num_docs, max(64, min(512, round(3 * math.sqrt(num_docs))))))


def default_pool(num_docs: int, candidates: int) -> int:
    """Documents scored by centroid interaction: ``4 x candidates`` (at most ``N``)."""
    return int(min(num_docs, 4 * candidates))


class PlaidSearcher:
    """The four steps above over a :class:`~attnsift.indexes.plaid_index.PlaidIndex`.

    Parameters
    ----------
    index : PlaidIndex
    ncells, candidates, pool : int or None
        As in :class:`PlaidConfig` (None: the defaults for this index).
    """

    def __init__(self, index: Any, ncells: int | None = None, candidates: int | None = None,
                 pool: int | None = None) -> None:
        self.index = index
        self.ncells = int(min(index.ncentroids, ncells or default_ncells(index.ncentroids)))
        self.candidates = int(candidates or default_candidates(index.num_docs))
        self.pool = int(max(self.candidates, pool or default_pool(index.num_docs, self.candidates)))
        self._centroids: Any = None

    def __repr__(self) -> str:
        return f"PlaidSearcher(ncells={self.ncells}, candidates={self.candidates}, pool={self.pool})"

    def centroid_scores(self, query_tokens: np.ndarray) -> np.ndarray:
        """``[Lq, K]`` float32: each query token against each centroid (one query per product, so a query's
        scores do not depend on what it is batched with), by torch: what the numpy path uses; the compiled
        path computes the same scores transposed
        (:func:`attnsift.indexes.plaid_scores.centroid_scores_t`)."""
        import torch

        if self._centroids is None:
            self._centroids = torch.from_numpy(self.index.centroids)
        q = torch.from_numpy(np.ascontiguousarray(query_tokens, dtype=np.float32))
        return (q @ self._centroids.T).numpy()

    def approximate(self, query_tokens: np.ndarray, s: np.ndarray | None = None,
                    impl: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Candidate documents with their probed-centroid scores (step 2).

        Parameters
        ----------
        query_tokens : np.ndarray
            ``[Lq, dim]``.
        s : np.ndarray, optional
            Their :meth:`centroid_scores`, when already computed.
        impl : {"auto", "numba", "int16", "numpy"}
            The compiled kernel (:func:`attnsift.indexes.plaid_scores.probe`) or numpy; the same documents and
            scores (float64 sums of the same float32 values).

        Returns
        -------
        docs : np.ndarray
            ``[n]`` int64 document positions, sorted.
        scores : np.ndarray
            ``[n]`` float64 approximate scores (up to a per-query constant).
        """
        from attnsift.indexes import plaid_kernel, plaid_scores

        lq = query_tokens.shape[0]
        if lq == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        if plaid_kernel.resolve(impl) != "numpy":
            st = plaid_scores.centroid_scores_t(self.index, query_tokens) if s is None else plaid_kernel.transposed(s)
            return plaid_scores.probe(self.index, st, lq, self.ncells)
        s = self.centroid_scores(query_tokens) if s is None else s  # [Lq, K]
        nc = self.ncells
        part = np.argpartition(-s, nc - 1, axis=1)[:, :nc] if nc < s.shape[1] else np.tile(np.arange(nc), (lq, 1))
        ps = np.take_along_axis(s, part, axis=1)  # [Lq, nc]
        order = np.lexsort((part, -ps), axis=1)  # best cell first (ties: lower centroid id)
        cells = np.take_along_axis(part, order, axis=1)  # [Lq, nc]
        cscore = np.take_along_axis(ps, order, axis=1)  # [Lq, nc]
        docs, owner = self.index.cell_documents(cells.reshape(-1))  # [E], [E] (position in cells)
        if docs.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        cand, local = np.unique(docs, return_inverse=True)
        best = np.repeat(cscore[:, -1:], cand.size, axis=1)  # [Lq, n]: absent -> the lowest probed score
        row, rank, flat = owner // nc, owner % nc, cscore.reshape(-1)
        for r in range(nc - 2, -1, -1):  # worse cells first: a better one overwrites (pairs unique per rank)
            sel = rank == r
            best[row[sel], local[sel]] = flat[owner[sel]]
        return cand.astype(np.int64), best.sum(0, dtype=np.float64)

    @staticmethod
    def _best(docs: np.ndarray, scores: np.ndarray, keep: int) -> np.ndarray:
        """The ``keep`` best ``docs`` by ``scores`` (ties: lower position), as sorted positions (one partition,
        then the ties at the boundary by position: the same set as a full sort)."""
        if docs.size <= keep:
            return np.sort(docs)
        kth = np.partition(-scores, keep - 1)[keep - 1]  # the keep-th best score, negated
        sure = docs[-scores < kth]
        ties = np.sort(docs[-scores == kth])[: keep - sure.size]
        return np.sort(np.concatenate([sure, ties]))

    def shortlist(self, query_tokens: np.ndarray, k: int, s: np.ndarray | None = None,
                  impl: str = "auto") -> np.ndarray:
        """The documents exact MaxSim scores (steps 1-3): the ``max(pool, k)`` best by probed-centroid score,
        then the ``max(candidates, k)`` best of those by centroid interaction; sorted positions. ``impl`` as in
        :meth:`approximate`."""
        from attnsift.indexes import plaid_kernel, plaid_scores

        cpu = plaid_kernel.resolve(impl)
        if cpu == "numpy":
            return self._shortlist(query_tokens, self.centroid_scores(query_tokens) if s is None else s, k, cpu)
        st = plaid_scores.centroid_scores_t(self.index, query_tokens) if s is None else plaid_kernel.transposed(s)
        return self._shortlist(query_tokens, st, k, cpu)

    def _shortlist(self, q: np.ndarray, s: np.ndarray, k: int, impl: str) -> np.ndarray:
        """Steps 2-3 from the centroid scores: ``s`` ``[Lq, K]`` on the numpy path, else ``S^T`` in the
        kernels' layout (:func:`attnsift.indexes.plaid_scores.centroid_scores_t`)."""
        from attnsift.indexes import plaid_kernel, plaid_scores

        lq = q.shape[0]
        if impl == "numpy":
            docs, approx = self.approximate(q, s, impl)
        elif lq == 0:
            docs, approx = np.zeros(0, np.int64), np.zeros(0, np.float64)
        else:
            docs, approx = plaid_scores.probe(self.index, s, lq, self.ncells)
        keep = max(self.candidates, k)
        pool = self._best(docs, approx, max(self.pool, keep))
        if pool.size <= keep:
            return pool
        if impl != "numpy":
            ci = plaid_kernel.centroid_interaction(self.index, s, lq, pool)
        else:
            ci = self.index.centroid_interaction(s, pool)
        return self._best(pool, ci, keep)

    def search(self, query_tokens: np.ndarray, k: int, impl: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents by exact MaxSim over the short list (steps 1-4).

        Parameters
        ----------
        query_tokens : np.ndarray
            ``[Lq, dim]`` unit-norm query token vectors.
        k : int
        impl : {"auto", "numba", "int16", "numpy", "reference", "triton"}
            ``auto``: the compiled kernels when numba is importable (:mod:`attnsift.indexes.plaid_kernel`,
            straight from the packed codes: ``numba`` float32, ``int16`` an int16 table; ``auto`` picks
            :data:`~attnsift.indexes.plaid_kernel.AUTO`), else ``numpy`` (the numpy path, bfloat16 residual
            products: :meth:`~attnsift.indexes.plaid_index.PlaidIndex.exact_scores`); ``reference`` /
            ``triton``: exact MaxSim over decompressed float32 tokens through
            :func:`attnsift.attention_kernels.maxsim.api.maxsim` (``triton`` on the GPU), after the ``auto``
            short list.

        Returns
        -------
        docs : np.ndarray
            ``[<= k]`` int64 document positions, best first (ties: lower position).
        scores : np.ndarray
            ``[<= k]`` float32 MaxSim scores.
        """
        from attnsift.indexes import plaid_kernel

        if impl not in (*plaid_kernel.IMPLS, "reference", "triton"):
            raise ValueError(f"impl must be one of {(*plaid_kernel.IMPLS, 'reference', 'triton')}, got {impl!r}")
        cpu = plaid_kernel.resolve(impl if impl in plaid_kernel.IMPLS else "auto")
        q = np.ascontiguousarray(query_tokens, dtype=np.float32)
        if q.shape[0] == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if cpu == "numpy":
            s = self.centroid_scores(q)
        else:
            from attnsift.indexes import plaid_scores

            s = plaid_scores.centroid_scores_t(self.index, q)  # S^T, in the kernels' layout
        cand = self._shortlist(q, s, k, cpu)
        if cand.size == 0:
            return cand, np.zeros(0, np.float32)
        if impl in plaid_kernel.IMPLS:
            if cpu == "numpy":
                sc = self.index.exact_scores(q, s, cand)
            else:
                from attnsift.indexes import plaid_kernel16

                sc = (plaid_kernel16 if cpu == "int16" else plaid_kernel).exact_scores(self.index, q, s, cand)
        else:
            import torch

            from attnsift.attention_kernels.maxsim.api import maxsim

            dev = "cuda" if impl == "triton" and torch.cuda.is_available() else "cpu"  # else maxsim says why
            toks, offs = self.index.gather(cand)
            sc = maxsim(torch.from_numpy(q)[None].to(dev), torch.from_numpy(toks).to(dev), torch.from_numpy(offs),
                        impl=impl)[0].cpu().numpy()
        top = np.lexsort((cand, -sc))[:k]
        return cand[top], sc[top]
