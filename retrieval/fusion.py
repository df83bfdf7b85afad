"""Fusion of rankings: reciprocal rank fusion and normalised score fusion.

Both functions take any :class:`~attnsift.types.Ranking` objects for one query (first-stage runs, or
a reranker's scores beside the first stage's), and :class:`FusionRetriever` fuses retrievers.

- RRF (Cormack, Clarke & Buettcher, SIGIR 2009): ``score(d) = sum_i w_i / (k + rank_i(d))`` with
  ranks from 1; a ranking that does not list ``d`` adds nothing.
- Score fusion: ``score(d) = sum_i w_i * norm_i(s_i(d))`` with ``minmax`` (to [0, 1]) or ``zscore``
  normalisation per ranking. A document missing from ranking ``i`` gets that ranking's lowest
  normalised score (0 for minmax), i.e. it counts as no better than the worst retrieved document.
  ``"none"`` adds raw scores (only meaningful on comparable scales).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attnsift.config import resolve_config
from attnsift.retrieval.config import DEFAULT_RRF_K, FusionConfig
from attnsift.types import Candidate, Document, Query, Ranking, Run, check_k

_NORMALIZATIONS = ("minmax", "zscore", "none")

#: the manifest kind of a saved :class:`FusionRetriever`
KIND = "hybrid"


def _check_rankings(rankings: Sequence[Ranking]) -> list[Ranking]:
    if isinstance(rankings, Ranking):
        raise TypeError("expected a sequence of Rankings to fuse, got a single Ranking; wrap it in a list")
    rankings = list(rankings)
    if not rankings:
        raise ValueError("nothing to fuse: give at least one Ranking")
    for r in rankings:
        if not isinstance(r, Ranking):
            raise TypeError(f"fusion takes Ranking objects, got {type(r).__name__}")
    qids = {r.query.id for r in rankings}
    if len(qids) > 1:
        raise ValueError(f"the rankings to fuse are for different queries {sorted(qids)}; fuse rankings of one query")
    return rankings


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """One weight per ranking (1 each by default), checked as :class:`FusionConfig` checks them."""
    if weights is None:
        return [1.0] * n
    return FusionConfig.from_options(weights=tuple(weights)).weights_for(n)


def _documents(rankings: Sequence[Ranking]) -> dict[str, Document | None]:
    docs: dict[str, Document | None] = {}
    for r in rankings:
        for c in r.candidates:
            if docs.get(c.doc_id) is None:
                docs[c.doc_id] = c.document
    return docs


def ranking_columns(ranking: Ranking) -> tuple[list[str], np.ndarray]:
    """A ranking's doc ids (best first) and ``[n]`` float64 scores, without making its Candidates when
    it holds them as arrays (a first stage's lazy Ranking)."""
    ids = ranking.doc_ids
    return ids, np.fromiter(ranking.scores().values(), np.float64, len(ids))


def fuse_columns(ids: Sequence[Sequence[str]], scores: Sequence[np.ndarray], method: str = "rrf", *,
                 weights: Sequence[float], rrf_k: float = DEFAULT_RRF_K,
                 normalization: str = "minmax") -> tuple[list[str], np.ndarray]:
    """Fuse one query's rankings given as columns; the arithmetic of :func:`reciprocal_rank_fusion` and
    :func:`score_fusion` done over arrays, in the same order of float operations (the same bits).

    Parameters
    ----------
    ids : sequence of sequences of str
        Per ranking, its doc ids best first (unique within a ranking).
    scores : sequence of np.ndarray
        Per ranking, ``[n_i]`` float64 scores aligned with ``ids`` (unused by RRF).
    method : {"rrf", "score"}
    weights : sequence of float
        One per ranking (already checked).
    rrf_k, normalization
        As in :func:`reciprocal_rank_fusion` / :func:`score_fusion`.

    Returns
    -------
    doc_ids : list of str
        Every document of any ranking, by fused score descending, ties by doc id ascending.
    fused : np.ndarray
        ``[n]`` float64 fused scores in that order.
    """
    sizes = [len(x) for x in ids]
    flat = [d for x in ids for d in x]
    if not flat:
        return [], np.zeros(0, np.float64)
    # sorted unique ids: a document's index in ``uniq`` is its tie-break rank (ascending id)
    uniq, inverse = np.unique(np.array(flat, dtype=object), return_inverse=True)
    inverse = inverse.reshape(-1)
    bounds = np.cumsum([0, *sizes])
    fused = np.zeros(len(uniq), np.float64)
    if method == "rrf":
        # bincount adds the contributions in array order: ranking 0's, then ranking 1's, ... as the loop did
        contrib = np.concatenate([w / (rrf_k + np.arange(1, n + 1, dtype=np.float64)) for w, n in zip(weights, sizes)])
        fused = np.bincount(inverse, weights=contrib, minlength=len(uniq))
    else:
        for i, w in enumerate(weights):
            normed, fill = normalize_array(np.asarray(scores[i], np.float64), normalization)
            col = np.full(len(uniq), fill, np.float64)
            col[inverse[bounds[i] : bounds[i + 1]]] = normed
            fused = fused + w * col
    order = np.lexsort((np.arange(len(uniq)), -fused))
    return uniq[order].tolist(), fused[order]


def normalize_array(scores: np.ndarray, normalization: str) -> tuple[np.ndarray, float]:
    """:func:`normalize_scores` over an array (the same float operations, so the same values)."""
    if len(scores) == 0:
        return scores, 0.0
    if normalization == "minmax":
        lo, hi = float(scores.min()), float(scores.max())
        if hi - lo <= 0:
            return np.ones(len(scores)), 0.0
        return (scores - lo) / (hi - lo), 0.0
    if normalization == "zscore":
        s = scores.tolist()  # Python sums, left to right, exactly as normalize_scores adds
        mean = sum(s) / len(s)
        std = math.sqrt(sum((x - mean) ** 2 for x in s) / len(s))
        if std <= 0:
            return np.zeros(len(s)), 0.0
        z = (scores - mean) / std
        return z, float(z.min())
    return scores, float(scores.min())


def _fused_ranking(query: Query, ids: list[str], scores: np.ndarray, documents: Any) -> Ranking:
    """A Ranking over fused columns already in Ranking order; candidates made only when needed where
    :meth:`Ranking.presorted` exists."""
    presorted = getattr(Ranking, "presorted", None)
    if presorted is not None:
        return presorted(query, ids, scores, documents, check=False)
    docs = documents(ids) if callable(documents) else documents
    values = scores.tolist()
    return Ranking(query, tuple(Candidate(d, s, None if docs is None else docs[i]) for i, (d, s) in enumerate(zip(ids, values))))


def _documents_from(rankings: Sequence[Ranking]) -> Any:
    """``ids -> Documents`` from the rankings' candidates (the first one that carries the text), made on use."""
    def lookup(ids: Sequence[str]) -> list[Document | None]:
        docs = _documents(rankings)
        return [docs.get(d) for d in ids]

    return lookup


def _fuse_rankings(rankings: Sequence[Ranking], method: str, weights: list[float], rrf_k: float,
                   normalization: str, k: int | None = None) -> Ranking:
    cols = [ranking_columns(r) for r in rankings]
    ids, fused = fuse_columns([c[0] for c in cols], [c[1] for c in cols], method, weights=weights, rrf_k=rrf_k,
                              normalization=normalization)
    if k is not None:
        ids, fused = ids[:k], fused[:k]
    return _fused_ranking(rankings[0].query, ids, fused, _documents_from(rankings))


def reciprocal_rank_fusion(rankings: Sequence[Ranking], k: int = 60, weights: Sequence[float] | None = None) -> Ranking:
    """Reciprocal rank fusion of rankings for one query.

    Parameters
    ----------
    rankings : sequence of Ranking
        For the same query id; each in its own (score) order.
    k : int
        The RRF constant (60 in the paper); larger flattens the rank discount.
    weights : sequence of float, optional
        One per ranking (default 1).

    Returns
    -------
    Ranking
        Every document in any input, scored ``sum_i w_i / (k + rank_i)``; documents keep their texts.
    """
    rankings = _check_rankings(rankings)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise ValueError(f"rrf k must be a number >= 0, got {k!r}")
    return _fuse_rankings(rankings, "rrf", _check_weights(weights, len(rankings)), k, "none")


def normalize_scores(scores: Sequence[float], normalization: str = "minmax") -> tuple[list[float], float]:
    """Normalise one ranking's scores; returns ``(normalised, fill value for missing documents)``.

    ``minmax``: ``(s - min) / (max - min)``; all-equal scores become 1. Missing: 0.
    ``zscore``: ``(s - mean) / std`` (population std); all-equal become 0. Missing: the lowest z.
    ``none``: unchanged. Missing: the lowest score.
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    normed, fill = normalize_array(np.asarray([float(x) for x in scores], np.float64), normalization)
    return normed.tolist(), fill


def score_fusion(rankings: Sequence[Ranking], weights: Sequence[float] | None = None, normalization: str = "minmax") -> Ranking:
    """Weighted sum of per-ranking normalised scores, for one query.

    Parameters
    ----------
    rankings : sequence of Ranking
    weights : sequence of float, optional
        One per ranking (default 1): e.g. ``[0.3, 0.7]`` for BM25 + dense.
    normalization : {"minmax", "zscore", "none"}

    Returns
    -------
    Ranking
        The union of the inputs' documents, scored ``sum_i w_i * norm_i(d)`` (a missing document gets
        ranking ``i``'s fill value, see :func:`normalize_scores`).
    """
    rankings = _check_rankings(rankings)
    w = _check_weights(weights, len(rankings))
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    return _fuse_rankings(rankings, "score", w, DEFAULT_RRF_K, normalization)


class FusionRetriever:
    """Fuse the top-``depth`` of several retrievers per query.

    Parameters
    ----------
    retrievers : sequence of Retriever
        Anything with ``retrieve_batch(queries, k) -> Run`` (BM25, dense, late, another fusion).
    config : FusionConfig, optional
        ``method`` ("rrf" or "score"), ``weights`` (one per retriever), ``rrf_k``, ``depth``
        (candidates taken from each retriever before fusing), ``normalization`` (for "score"); see
        :class:`~attnsift.retrieval.config.FusionConfig`.
    name : str
        Run name (default ``"hybrid"``).
    **options
        :class:`FusionConfig` fields as keywords, instead of ``config``.
    """

    def __init__(self, retrievers: Sequence[Any], *, config: FusionConfig | None = None, name: str = "hybrid",
                 **options: Any) -> None:
        self.config = resolve_config(FusionConfig, config, options, "FusionRetriever")
        retrievers = list(retrievers)
        if not retrievers:
            raise ValueError("FusionRetriever needs at least one retriever")
        for r in retrievers:
            if not callable(getattr(r, "retrieve_batch", None)):
                raise TypeError(f"{type(r).__name__} has no retrieve_batch(queries, k); it is not a Retriever")
        self.retrievers = retrievers
        self.method = self.config.method
        self.weights = self.config.weights_for(len(retrievers))
        self.rrf_k = self.config.effective_rrf_k
        self.depth = self.config.depth
        self.normalization = self.config.effective_normalization
        self.name = name

    def __repr__(self) -> str:
        names = ", ".join(getattr(r, "name", type(r).__name__) for r in self.retrievers)
        return f"FusionRetriever([{names}], method={self.method!r}, weights={self.weights})"

    def fuse(self, rankings: Sequence[Ranking], k: int | None = None) -> Ranking:
        """Fuse one query's rankings with this retriever's method and weights (the best ``k``; all when None)."""
        rankings = _check_rankings(rankings)
        return _fuse_rankings(rankings, self.method, list(self.weights), self.rrf_k, self.normalization, k)

    def retrieve(self, query: Query | str, k: int = 100) -> Ranking:
        q = query if isinstance(query, Query) else Query("q0", query)
        return self.retrieve_batch([q], k=k)[q.id]

    def retrieve_batch(self, queries: Sequence[Query | str], k: int = 100, progress: bool = False) -> Run:
        """Fused top-``k`` per query (each retriever contributes its top ``depth``, retrieved for all
        queries at once). Fusion works on the parts' columns (ids, scores): no Candidate is made
        unless someone reads the fused candidates (their documents then come from the parts)."""
        from attnsift.retrieval.dense import as_queries

        k = check_k(k)
        qs = as_queries(queries)
        runs = [r.retrieve_batch(qs, k=self.depth) for r in self.retrievers]
        out = []
        for q in qs:
            parts = [run[q.id] if q.id in run else Ranking(q, ()) for run in runs]
            out.append(_fuse_rankings(parts, self.method, self.weights, self.rrf_k, self.normalization, k))
        return Run(out, name=self.name)

    @property
    def num_docs(self) -> int:
        """Documents of the largest part (the parts index the same corpus when built by ``build_index``)."""
        return max(int(getattr(r, "num_docs", 0)) for r in self.retrievers)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = True, *, corpus_fingerprint: str | None = None,
             dataset: str | None = None) -> Path:
        """Write every part (each a saved index in ``part<i>-<kind>/``) and a manifest, atomically.

        Parameters
        ----------
        path : str or Path
            The folder; it appears (or replaces an old one) only once everything is written.
        overwrite : bool
            Replace an existing folder.
        corpus_fingerprint, dataset : str, optional
            The corpus record (see :func:`attnsift.indexes.corpus.corpus_fields`), written to the
            manifest and to every part's; default: what ``build_index`` recorded on this retriever.

        Raises
        ------
        TypeError
            A part that cannot be saved (it has no ``save``).
        """
        from attnsift.indexes.corpus import corpus_fields
        from attnsift.io import atomic_dir, write_manifest

        corpus_fingerprint = corpus_fingerprint or getattr(self, "corpus_fingerprint", None)
        dataset = dataset or getattr(self, "dataset", None)
        corpus = corpus_fields(corpus_fingerprint, dataset)
        for r in self.retrievers:
            if not callable(getattr(r, "save", None)):
                raise TypeError(f"cannot save a hybrid index with a {type(r).__name__} part: it has no save()")
        parts = []
        with atomic_dir(Path(path), overwrite=overwrite) as tmp:
            for i, r in enumerate(self.retrievers):
                kind = getattr(r, "name", type(r).__name__.lower())
                sub = f"part{i}-{kind}"
                r.save(tmp / sub, overwrite=True, corpus_fingerprint=corpus_fingerprint, dataset=dataset)
                parts.append({"path": sub, "kind": kind})
            write_manifest(tmp, KIND, fusion=dataclasses.asdict(self.config), parts=parts, name=self.name,
                           doc_count=self.num_docs, **corpus)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, *, encoder: str | Any | None = None, device: Any = None,
             dtype: Any = None, **options: Any) -> "FusionRetriever":
        """Load a folder written by :meth:`save`; each part is loaded by its own kind.

        Parameters
        ----------
        path : str or Path
        verify : bool
            Check every file (the parts' included) against the manifest's checksums first.
        encoder : str, optional
            The query encoder of the dense / late parts (default: the one each part records; another
            is an error).
        device, dtype : optional
            For those encoders.
        **options
            :class:`FusionConfig` fields that replace the recorded ones (fusion happens at search time,
            so ``method``, ``weights``, ``depth``... may change).

        Raises
        ------
        IndexCorruptedError
            Missing or modified files, a manifest of another kind or without its parts.
        ValueError
            An option that is not a FusionConfig field.
        """
        from attnsift.config import config_from_options
        from attnsift.errors import IndexCorruptedError
        from attnsift.io import read_manifest
        from attnsift.registry import load_index

        path = Path(path)
        manifest = read_manifest(path, KIND, verify=verify)
        try:
            recorded = dict(manifest["fusion"])
            parts = [(p["path"], p["kind"]) for p in manifest["parts"]]
        except (KeyError, TypeError) as exc:
            raise IndexCorruptedError(f"{path}/manifest.json lacks field {exc}; rebuild the index") from exc
        if recorded.get("weights") is not None:
            recorded["weights"] = tuple(recorded["weights"])
        config = config_from_options(FusionConfig, {**recorded, **options})
        loaded = []
        for sub, kind in parts:
            extra = {} if kind == "bm25" else {"encoder": encoder, "device": device, "dtype": dtype}
            # the top manifest covered their files; one progress line (the caller's) for the whole load
            loaded.append(load_index(path / sub, verify=False, progress=False, **extra))
        out = cls(loaded, config=config, name=manifest.get("name") or "hybrid")
        corpus = manifest.get("corpus") or {}
        out.corpus_fingerprint, out.dataset = corpus.get("fingerprint"), corpus.get("dataset")
        return out
