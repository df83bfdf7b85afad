"""A multi-vector (token) index for late interaction.

Stores every document's token vectors concatenated in one ``[T, dim]`` float16 array (half the bytes
of float32; MaxSim scores move by ~1e-3, far below ranking-relevant gaps) with ``offsets [N+1]`` int64
(document ``i`` owns rows ``offsets[i]:offsets[i+1]``), plus a faiss index over the token vectors
that turns each query token into candidate documents (ColBERT v1's candidate generation).

Cost per document: ``len * dim * 2`` bytes of vectors (all-MiniLM-L6-v2: 768 bytes per token, about
170 KB for a 220-token abstract) plus the ANN index (``flat``: ``len * dim * 4``; ``ivfpq``:
``len * (pq_m + 8)`` bytes, 56 bytes per token at the default ``pq_m = dim / 8``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from attnsift.errors import IndexCorruptedError
from attnsift.indexes.faiss_index import FaissIndex

logger = logging.getLogger(__name__)

TOKENS_FILE = "tokens.npy"
OFFSETS_FILE = "offsets.npy"
ANN_FILE = "token_index.faiss"
#: Above this many tokens, ``index_type="auto"`` picks IVF-PQ instead of an exact flat index.
AUTO_FLAT_MAX_TOKENS = 200_000


class TokenIndex:
    """Token vectors of a corpus plus an ANN index over them.

    Parameters
    ----------
    tokens : np.ndarray
        ``[T, dim]`` float16, documents' tokens concatenated in document order.
    offsets : np.ndarray
        ``[N+1]`` int64, ``offsets[0] = 0``, ``offsets[-1] = T``.
    ann : FaissIndex
        Over the ``T`` token vectors (row ``t`` is token ``t``).
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, ann: FaissIndex) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or offsets[-1] != tokens.shape[0] or (np.diff(offsets) < 0).any():
            raise ValueError(f"offsets must be non-decreasing from 0 to {tokens.shape[0]} (the token count), got {offsets[:5]}...")
        if ann.ntotal != tokens.shape[0]:
            raise ValueError(f"the ANN index holds {ann.ntotal} vectors, the token array {tokens.shape[0]}")
        self.tokens = tokens
        self.offsets = offsets
        self.ann = ann
        self.token_doc = np.repeat(np.arange(offsets.size - 1, dtype=np.int32), np.diff(offsets))  # [T]

    @property
    def num_docs(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    @classmethod
    def build(
        cls, tokens: np.ndarray, lengths: np.ndarray, index_type: str = "auto", seed: int = 0, **ann_options: Any
    ) -> "TokenIndex":
        """Index ``tokens`` (``[T, dim]``) of documents with ``lengths`` (``[N]``, summing to ``T``).

        ``index_type="auto"`` is exact ``flat`` up to 200,000 tokens, else ``ivfpq`` with
        ``nlist ~ 2 sqrt(T)`` (at most 4096). Other ``ann_options`` go to :meth:`FaissIndex.build`.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or lengths.size == 0:
            raise ValueError("lengths must be a non-empty [N] array; is the corpus empty?")
        if (lengths < 0).any() or int(lengths.sum()) != tokens.shape[0]:
            raise ValueError(f"lengths must be >= 0 and sum to the token count {tokens.shape[0]}, they sum to {int(lengths.sum())}")
        if tokens.shape[0] == 0:
            raise ValueError("no document has any token to index (all texts empty?)")
        t = tokens.shape[0]
        if index_type == "auto":
            index_type = "flat" if t <= AUTO_FLAT_MAX_TOKENS else "ivfpq"
            if index_type == "ivfpq":
                ann_options.setdefault("nlist", int(min(4096, max(1, 2 * np.sqrt(t)))))
                ann_options.setdefault("nprobe", 16)
        tokens16 = np.ascontiguousarray(tokens, dtype=np.float16)
        ann = FaissIndex.build(tokens16.astype(np.float32), index_type=index_type, metric="ip", seed=seed, **ann_options)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(tokens16, offsets, ann)

    def candidates(self, query_tokens: np.ndarray, k_per_token: int) -> np.ndarray:
        """Documents owning any of the ``k_per_token`` nearest tokens of any query token.

        Parameters
        ----------
        query_tokens : np.ndarray
            ``[Lq, dim]``.

        Returns
        -------
        np.ndarray
            Sorted unique document positions (int64).
        """
        if query_tokens.shape[0] == 0:
            return np.zeros((0,), np.int64)
        _, pos = self.ann.search(query_tokens, k_per_token)  # [Lq, k]
        pos = pos[pos >= 0]
        return np.unique(self.token_doc[pos]).astype(np.int64)

    def gather(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token vectors of ``docs`` as ``([t, dim] float32, offsets [n+1] int64)``."""
        docs = np.asarray(docs, dtype=np.int64)
        starts, ends = self.offsets[docs], self.offsets[docs + 1]
        lens = ends - starts
        if docs.size == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((1,), np.int64)
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        return self.tokens[idx].astype(np.float32), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)

    def bytes_per_doc(self) -> dict[str, float]:
        """Average bytes per document: token vectors, ANN index, and total."""
        vec = self.tokens.nbytes / self.num_docs
        ann = self.ann.nbytes() / self.num_docs
        return {"vectors": vec, "ann": ann, "total": vec + ann, "tokens_per_doc": self.num_tokens / self.num_docs}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> dict:
        """Write the arrays and the ANN index into ``directory``; returns fields for the manifest."""
        directory = Path(directory)
        np.save(directory / TOKENS_FILE, self.tokens, allow_pickle=False)
        np.save(directory / OFFSETS_FILE, self.offsets, allow_pickle=False)
        self.ann.save(directory, ANN_FILE)
        return {"num_docs": self.num_docs, "num_tokens": self.num_tokens, "dim": self.dim, "dtype": "float16", "ann": self.ann.info()}

    @classmethod
    def load(cls, directory: str | Path, info: dict, mmap: bool = False) -> "TokenIndex":
        """Read what :meth:`save` wrote; ``info`` is its return value (from the manifest)."""
        directory = Path(directory)
        try:
            tokens = np.load(directory / TOKENS_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
            offsets = np.load(directory / OFFSETS_FILE, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexCorruptedError(f"token arrays in {directory} are unreadable ({exc}); rebuild the index") from exc
        if tokens.dtype != np.float16 or tokens.ndim != 2 or tokens.shape != (int(info["num_tokens"]), int(info["dim"])):
            raise IndexCorruptedError(
                f"{directory / TOKENS_FILE} has shape {tokens.shape} {tokens.dtype}, the manifest says "
                f"({info['num_tokens']}, {info['dim']}) float16; rebuild the index"
            )
        ann = FaissIndex.load(directory, info["ann"], ANN_FILE)
        try:
            return cls(tokens, offsets, ann)
        except ValueError as exc:
            raise IndexCorruptedError(f"{directory}: {exc}; rebuild the index") from exc
