"""Late-interaction (ColBERT-style) first stage: token vectors, ANN candidates, exact MaxSim.

Two index types hold the documents' encoder token vectors (special tokens dropped, L2-normalised):

- the faiss index types (``index_type`` ``auto`` / ``flat`` / ``hnsw`` / ``ivfpq``): every token vector
  in float16 (768 bytes per token at dim 384, see :mod:`attnsift.indexes.token_index`); candidate
  generation takes each query token's ``candidate_k`` nearest document tokens in a faiss index over all
  token vectors; their documents are the candidates (ColBERT v1);
- ``index="plaid"`` (``index_type="plaid"``): each token compressed to a centroid id plus 2-bit residuals
  and a one-byte scale (99 bytes per token at dim 384, see :mod:`attnsift.indexes.plaid_index`);
  candidates come from centroid interactions, pruned to a pool and then to a short list by centroid
  interaction over all their tokens (:mod:`attnsift.retrieval.plaid`).

A query is encoded the same way, and the candidates are rescored exactly: ``score(q, d) = sum over query
tokens of max over d's tokens of q_i . d_j`` (MaxSim), by :func:`attnsift.attention_kernels.maxsim.api.maxsim`
(plaid with ``impl="auto"``: on the compressed tokens directly, by compiled kernels when numba is installed
(the ``dense`` extra), else a bfloat16 product with the residuals; ``impl="numba"`` (float32 table),
``"int16"`` (int16 table, what ``auto`` picks) or ``"numpy"`` forces one; see :mod:`attnsift.indexes.plaid_kernel` and :meth:`~attnsift.indexes.plaid_index.PlaidIndex.exact_scores`).

With ``normalize="query_length"`` the sum is divided by the number of *real* query tokens. Padded
query positions (when several queries are scored in one batch, :meth:`score`) are masked out of the sum
and of that count alike, so a query's score never depends on what it was batched with.

Works with any encoder's token outputs; a sentence encoder such as all-MiniLM-L6-v2 was not trained for
MaxSim, so its late-interaction quality is below its own dense quality (see
benchmarks/results/first_stage.md). A ColBERT checkpoint folder loads the same way (its linear
projection layer is not applied by this encoder, so it is a plain-BERT-token baseline).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from attnsift.concurrency import resolve_threads
from attnsift.config import config_from_options, resolve_config
from attnsift.errors import IndexCorruptedError
from attnsift.io import atomic_dir, read_manifest, write_manifest
from attnsift.indexes.corpus import corpus_fields
from attnsift.indexes.doc_store import export_store, open_store, take_documents
from attnsift.retrieval.config import LateInteractionConfig
from attnsift.retrieval.plaid import (
    PLAID_OPTIONS,
    PlaidConfig,
    PlaidSearcher,
    plaid_config,
    split_plaid_options,
)
from attnsift.retrieval.dense import (
    PROBE_DIMS,
    PROBE_TEXT,
    as_queries,
    check_encoder,
    check_encoder_argument,
    collect_documents,
    encode_documents_cached,
    encoder_argument,
    held_documents,
    id_rank,
    ids_at,
    load_encoder,
    make_encoder,
)
from attnsift.types import Document, Query, Ranking, Run, check_k

logger = logging.getLogger(__name__)

KIND = "late"
PLAID = "plaid"
#: faiss build options (LateInteractionConfig fields) that have no meaning for a plaid index.
_FAISS_ONLY = ("hnsw_m", "ef_construction", "ef_search", "nlist", "pq_m", "nprobe", "train_size", "m")
_DOC_CHUNK_TOKENS = 131_072  # tokens of candidate documents scored per MaxSim call (~200 MB float32 at dim 384)


def split_late_options(options: Mapping[str, Any], config: Any = None,
                       plaid: PlaidConfig | None = None) -> tuple[bool, PlaidConfig | None, dict[str, Any]]:
    """``(plaid mode, its PlaidConfig, the LateInteractionConfig options)`` from loose options; one-line
    errors for options of the other mode (faiss options with ``index="plaid"``, plaid ones without)."""
    options = dict(options)
    plaid_mode = (plaid is not None or any(options.get(n) == PLAID for n in ("index", "index_type"))
                  or getattr(config, "index_type", None) == PLAID)
    if not plaid_mode:
        only = sorted(set(options) & (set(PLAID_OPTIONS) - {"nbits", "seed"}))
        if only:
            raise ValueError(f"{', '.join(only)} appl{'ies' if len(only) == 1 else 'y'} to the compressed index; "
                             "add index='plaid' or drop them")
        return False, None, options
    options = {n: v for n, v in options.items() if not (n in ("index", "index_type") and v == PLAID)}
    given, options = split_plaid_options(options)
    faiss_given = sorted(set(options) & {"index", "index_type", "candidate_k", *_FAISS_ONLY})
    if faiss_given:
        raise ValueError(f"{', '.join(faiss_given)} appl{'ies' if len(faiss_given) == 1 else 'y'} to the faiss token "
                         "index, not to index='plaid'; drop "
                         f"{'it' if len(faiss_given) == 1 else 'them'} (plaid options: {', '.join(PLAID_OPTIONS)})")
    return True, plaid_config(given, base=plaid), options


def check_late_options(options: Mapping[str, Any]) -> None:
    """The option checks of :meth:`LateInteractionRetriever.from_corpus`, without building anything."""
    from attnsift.config import config_from_options

    _, _, rest = split_late_options(options)
    config_from_options(LateInteractionConfig, rest)


class LateInteractionRetriever:
    """Token-level late interaction over a :class:`~attnsift.indexes.token_index.TokenIndex`.

    Parameters
    ----------
    encoder : Encoder
    index : TokenIndex
    documents : sequence of Document
        In index order (a :class:`~attnsift.indexes.doc_store.DocumentStore` is kept as it is, read
        from disk; anything else as a list).
    config : LateInteractionConfig, optional
        Its search options apply here: ``candidate_k`` (nearest document tokens fetched per query
        token), ``normalize`` ("query_length" divides MaxSim by the number of real query tokens: the
        ranking per query is unchanged, scores become comparable across queries) and ``impl`` (MaxSim
        implementation); see :class:`~attnsift.retrieval.config.LateInteractionConfig`.
    probe : sequence of float, optional
        The index's probe vector (recorded in saved manifests).
    plaid : PlaidConfig, optional
        With a :class:`~attnsift.indexes.plaid_index.PlaidIndex`: its search options ``ncells``,
        ``candidates`` and ``pool`` (or give them as keywords).
    **options
        :class:`LateInteractionConfig` fields as keywords, instead of ``config``; with a plaid index
        also ``ncells``, ``candidates`` and ``pool``.
    """

    name = "late"

    def __init__(
        self,
        encoder: Any,
        index: Any,
        documents: Sequence[Document],
        *,
        config: LateInteractionConfig | None = None,
        probe: Sequence[float] | None = None,
        plaid: PlaidConfig | None = None,
        **options: Any,
    ) -> None:
        from attnsift.indexes.plaid_index import PlaidIndex

        self.mode = PLAID if isinstance(index, PlaidIndex) else "faiss"
        given, options = split_plaid_options(options) if self.mode == PLAID else ({}, options)
        if self.mode == PLAID:
            build = sorted(set(given) - set(PlaidConfig.SEARCH_OPTIONS))
            if build:
                raise ValueError(f"{', '.join(build)} are set when a plaid index is built; the retriever takes "
                                 f"{' and '.join(PlaidConfig.SEARCH_OPTIONS)}")
            self.plaid = plaid_config(given, base=plaid)
        elif plaid is not None:
            raise ValueError("plaid= applies to a plaid index (index='plaid'); this index is a faiss token index")
        self.config = resolve_config(LateInteractionConfig, config, options, "LateInteractionRetriever")
        if index.num_docs != len(documents):
            raise ValueError(f"the token index holds {index.num_docs} documents but {len(documents)} were given")
        if index.dim != encoder.dim:
            raise ValueError(f"the token index has dim {index.dim}, the encoder {encoder.name!r} gives {encoder.dim}")
        self.encoder = encoder
        self.index = index
        self.documents, self.doc_ids = held_documents(documents)
        self.candidate_k = self.config.candidate_k
        self.normalize = self.config.normalize
        self.impl = self.config.impl
        if self.impl in ("numba", "int16", "numpy") and self.mode != PLAID:
            raise ValueError(f"impl={self.impl!r} picks a plaid index's CPU kernels; this is a faiss token index: "
                             "use impl=auto, reference or triton")
        self.probe = list(probe) if probe is not None else None
        self.searcher = (PlaidSearcher(index, self.plaid.ncells, self.plaid.candidates, self.plaid.pool)
                         if self.mode == PLAID else None)
        self.stats: dict[str, float] = {}

    @property
    def num_docs(self) -> int:
        """How many documents the index holds."""
        return len(self.documents)

    def __repr__(self) -> str:
        where = repr(self.searcher) if self.searcher is not None else f"ann={self.index.ann.index_type!r}"
        return (
            f"LateInteractionRetriever(encoder={self.encoder.name!r}, docs={len(self.documents)}, "
            f"tokens={self.index.num_tokens}, {where})"
        )

    @classmethod
    def from_corpus(
        cls,
        corpus: Iterable[Document | str],
        encoder: str | Any = None,
        *,
        config: LateInteractionConfig | None = None,
        plaid: PlaidConfig | None = None,
        progress: bool | None = None,
        device: Any = None,
        dtype: Any = None,
        store_dir: str | Path | None = None,
        **options: Any,
    ) -> "LateInteractionRetriever":
        """Encode the corpus's token vectors and index them.

        Parameters
        ----------
        corpus : iterable of Document or str, mapping, Corpus or path
            A list is kept in memory; a streamed source (a path, a Corpus, a generator) is written once
            to a document store on disk and encoded from there
            (:func:`~attnsift.retrieval.dense.collect_documents`).
        encoder : str or Encoder
            As in :meth:`DenseRetriever.from_corpus <attnsift.retrieval.dense.DenseRetriever.from_corpus>`
            (default ``"minilm"``; ``model=`` is the deprecated spelling).
        config : LateInteractionConfig, optional
            ANN index type (``auto``: flat up to 200K tokens, else IVF-PQ), encoding cache (by default
            keyed by texts and encoder under ``$ATTNSIFT_CACHE/encodings``; ``cache=False`` turns it off),
            encoder overrides, faiss options and the search options; or give them as keyword ``options``.
        plaid : PlaidConfig, optional
            The compressed index's options (``index="plaid"``): ``ncentroids``, ``nbits``,
            ``kmeans_sample``, ``kmeans_iters``, ``seed``, ``ncells``, ``candidates``; or as keywords.
        progress : bool or None
            Progress on stderr while encoding; None: the process setting (:mod:`attnsift.progress`).
        device, dtype : optional
            Where and in what precision the encoder runs (default: CUDA when available, float32).
        store_dir : path, optional
            Where the documents are stored (as in :meth:`DenseRetriever.from_corpus
            <attnsift.retrieval.dense.DenseRetriever.from_corpus>`).
        **options
            :class:`LateInteractionConfig` fields; ``index="plaid"`` (or ``index_type="plaid"``) builds the
            compressed index instead of a faiss one, with the :class:`PlaidConfig` fields as keywords
            (``nbits`` and ``seed`` are then the plaid ones; faiss options and ``candidate_k`` are an error).
        """
        encoder = encoder_argument(encoder, options, default="minilm")
        plaid_mode, pcfg, options = split_late_options(options, config, plaid)
        cfg = resolve_config(LateInteractionConfig, config, options, "LateInteractionRetriever")
        check_encoder_argument(encoder)
        docs = collect_documents(corpus, store_dir, progress)
        enc_model = make_encoder(encoder, cfg.encoder_options(), device, dtype)
        t0 = time.perf_counter()
        enc = encode_documents_cached(enc_model, docs, cfg, ("tokens",), progress)
        t1 = time.perf_counter()
        if plaid_mode:
            from attnsift.indexes.plaid_index import PlaidIndex

            index = PlaidIndex.build(enc["tokens"], enc["lengths"], **pcfg.build_options())
        else:
            from attnsift.indexes.token_index import TokenIndex

            index = TokenIndex.build(enc["tokens"], enc["lengths"], index_type=cfg.index_type, **cfg.index_options())
        t2 = time.perf_counter()
        del enc
        probe = enc_model.encode_documents([PROBE_TEXT], progress=False)[0, :PROBE_DIMS].tolist()
        out = cls(enc_model, index, docs, config=cfg, probe=probe, **({"plaid": pcfg} if plaid_mode else {}))
        out.stats = {"encode_s": t1 - t0, "index_s": t2 - t1}
        return out

    # ------------------------------------------------------------------ scoring
    def _pad(self, query_tokens: Sequence[np.ndarray]) -> tuple[Any, Any]:
        import torch

        lq = max(1, max(t.shape[0] for t in query_tokens))
        q = torch.zeros(len(query_tokens), lq, self.index.dim)  # [B, Lq, D]
        mask = torch.zeros(len(query_tokens), lq, dtype=torch.bool)  # [B, Lq]
        for i, t in enumerate(query_tokens):
            q[i, : t.shape[0]] = torch.from_numpy(np.asarray(t, np.float32))
            mask[i, : t.shape[0]] = True
        return q, mask

    def score(self, query_tokens: Sequence[np.ndarray], docs: np.ndarray) -> np.ndarray:
        """Exact MaxSim of several queries against the same documents.

        Parameters
        ----------
        query_tokens : sequence of np.ndarray
            ``B`` arrays ``[Lq_i, dim]`` (e.g. from ``encoder.encode_tokens(texts, is_query=True)``);
            padded to the longest and masked.
        docs : np.ndarray
            ``[N]`` document positions in the index.

        Returns
        -------
        np.ndarray
            ``[B, N]`` float32.
        """
        import torch

        from attnsift.attention_kernels.maxsim.api import maxsim

        docs = np.asarray(docs, dtype=np.int64)
        b = len(query_tokens)
        out = np.zeros((b, docs.size), np.float32)
        if b == 0 or docs.size == 0:
            return out
        q, mask = self._pad(query_tokens)
        real = mask.sum(1).clamp(min=1).float()  # [B] real tokens (the normaliser counts no padding)
        lens = self.index.offsets[docs + 1] - self.index.offsets[docs]
        # Chunk the documents so the gathered float32 tokens stay within a bounded size.
        start = 0
        while start < docs.size:
            stop, acc = start, 0
            while stop < docs.size and (stop == start or acc + lens[stop] <= _DOC_CHUNK_TOKENS):
                acc += int(lens[stop])
                stop += 1
            toks, offs = self.index.gather(docs[start:stop])
            s = maxsim(q, torch.from_numpy(toks), torch.from_numpy(offs), mask, impl=self.impl)  # [B, n]
            if self.normalize == "query_length":
                s = s / real[:, None]
            out[:, start:stop] = s.float().cpu().numpy()
            start = stop
        return out

    # ------------------------------------------------------------------ search
    def retrieve(self, query: Query | str, k: int = 100) -> Ranking:
        """Top-``k`` documents for one query (a string gets id ``"q0"``)."""
        q = query if isinstance(query, Query) else as_queries([query])[0]
        return self.retrieve_batch([q], k=k, progress=False)[q.id]

    def retrieve_batch(self, queries: Sequence[Query | str], k: int = 100, progress: bool | None = None,
                       n_threads: int = 1) -> Run:
        """Top-``k`` per query among the candidates, ranked by exact MaxSim; a Run named ``"late"``.

        A query has at most as many results as it has candidate documents (faiss index: up to
        ``candidate_k x`` its token count; plaid: ``max(candidates, k)`` from its probed cells).
        ``n_threads`` as in :meth:`retrieve_encoded` (query encoding is not threaded by it).
        """
        k = check_k(k)
        n_threads = resolve_threads(n_threads)
        qs = as_queries(queries)
        if not qs:
            return Run((), name=self.name)
        qtok = self.encoder.encode_tokens([q.text for q in qs], is_query=True, progress=progress)
        return self.retrieve_encoded(qs, qtok, k=k, progress=progress, n_threads=n_threads)

    def retrieve_encoded(self, queries: Sequence[Query | str], query_tokens: Sequence[np.ndarray], k: int = 100,
                         progress: bool | None = None, n_threads: int = 1) -> Run:
        """As :meth:`retrieve_batch`, with the queries' token vectors already encoded.

        Parameters
        ----------
        queries : sequence of Query or str
        query_tokens : sequence of np.ndarray
            One ``[Lq_i, dim]`` array per query (``encoder.encode_tokens(texts, is_query=True)``).
        k : int
        progress : bool, optional
        n_threads : int
            Threads searching queries in parallel (1: in this thread; -1: one per CPU). Each query is
            searched on its own, so the results do not depend on it. A plaid index's compiled kernels
            release the GIL (queries/s grows with the cores); the faiss path's torch products are
            multi-threaded already.
        """
        from attnsift.progress import bar

        k = check_k(k)
        n_threads = resolve_threads(n_threads)
        qs = as_queries(queries)
        if len(query_tokens) != len(qs):
            raise ValueError(f"got {len(query_tokens)} token arrays for {len(qs)} queries; give one per query")
        pairs = list(zip(qs, query_tokens))
        show = progress if len(pairs) > 1 else False
        if n_threads == 1 or len(pairs) < 2:
            return Run([self._search_one(q, t, k) for q, t in bar(pairs, desc="late interaction", unit="query",
                                                                     progress=show)], name=self.name)
        from concurrent.futures import ThreadPoolExecutor

        size = max(1, min(32, -(-len(pairs) // (4 * n_threads))))  # several chunks per thread, in order
        chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
        with ThreadPoolExecutor(max_workers=n_threads) as pool, \
                bar(desc="late interaction", total=len(pairs), unit="query", progress=show) as counter:
            def run(chunk: list) -> list[Ranking]:
                out = [self._search_one(q, t, k) for q, t in chunk]
                counter.update(len(chunk))
                return out

            parts = list(pool.map(run, chunks))
        return Run((r for part in parts for r in part), name=self.name)

    def _search_one(self, q: Query, t: np.ndarray, k: int) -> Ranking:
        """One query's Ranking from its token vectors ``t``."""
        if self.searcher is not None:  # plaid: the searcher's four steps, exact scores of its short list
            cand, s = self.searcher.search(t, k, impl=self.impl)
            if self.normalize == "query_length":
                s = s / max(1, t.shape[0])
        else:
            cand = self.index.candidates(t, self.candidate_k)
            s = self.score([t], cand)[0]  # [n]
        if cand.size == 0:
            return Ranking(q, ())
        # Deterministic top-k: score descending, then doc id (the Ranking order; ids by their rank).
        s = np.asarray(s)
        top = np.lexsort((id_rank(self)[cand], -s))[:k]
        rows = np.asarray(cand)[top]
        docs = self.documents  # read when the candidates are first made
        return Ranking.presorted(q, ids_at(self.doc_ids, rows), s[top].astype(np.float64),
                                 lambda _ids, rows=rows.tolist(): take_documents(docs, rows), check=False)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = True, *, corpus_fingerprint: str | None = None,
             dataset: str | None = None) -> Path:
        """Write the index folder atomically with its manifest.
        ``corpus_fingerprint`` (``Corpus.fingerprint()``) and ``dataset`` are recorded in the manifest,
        for :func:`attnsift.indexes.corpus.check_index_corpus`.
        """
        corpus = corpus_fields(corpus_fingerprint, dataset)
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            info = self.index.save(tmp)
            export_store(self.documents, tmp)  # a store's files linked or copied, never parsed
            write_manifest(
                tmp,
                KIND,
                encoder={**self.encoder.config, "location": self.encoder.location},
                dim=self.index.dim,
                normalize=True,
                metric="maxsim",
                doc_count=len(self.documents),
                token_index=info,
                index=self.mode,
                plaid=self.plaid.search_options() if self.mode == PLAID else None,
                candidate_k=self.candidate_k,
                score_normalize=self.normalize,
                probe=self.probe,
                **corpus,
            )
        return path

    @classmethod
    def load(
        cls, path: str | Path, encoder: str | Any | None = None, *, verify: bool = True, device: Any = None,
        dtype: Any = None, mmap: bool = False, **options: Any,
    ) -> "LateInteractionRetriever":
        """Load an index written by :meth:`save` (see :meth:`DenseRetriever.load`).

        ``encoder`` is the query encoder (default: the one in the manifest; ``model=`` is the deprecated
        spelling).

        ``mmap=True`` maps the token vectors (plaid: codes and residuals) from disk instead of reading them
        into memory. ``options`` override the recorded search options ``candidate_k``, ``normalize``,
        ``impl`` (plaid: ``ncells``, ``candidates``, ``pool``, ``normalize``, ``impl``); build options (index type,
        encoder, faiss, centroids, bits) are an error: the index keeps how it was built.
        """
        encoder = encoder_argument(encoder, options)
        if encoder is not None:
            check_encoder_argument(encoder)
        path = Path(path)
        manifest = read_manifest(path, KIND, verify=False)  # the options are checked before the bytes
        plaid_mode = manifest.get("index") == PLAID
        accepted = [*LateInteractionConfig.SEARCH_OPTIONS, *PlaidConfig.SEARCH_OPTIONS] if plaid_mode \
            else list(LateInteractionConfig.SEARCH_OPTIONS)
        if plaid_mode:
            accepted.remove("candidate_k")
        build_only = sorted(set(options) - set(accepted))
        if build_only:
            raise ValueError(
                f"a saved late-interaction index keeps how it was built; {', '.join(build_only)} cannot change on load "
                f"(accepted: {', '.join(accepted)}); rebuild the index to change them"
            )
        if verify:
            read_manifest(path, KIND, verify=True)
        try:
            menc = manifest["encoder"]
            info = manifest["token_index"]
            doc_count = int(manifest["doc_count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptedError(f"{path}/manifest.json lacks field {exc}; rebuild the index") from exc
        if plaid_mode:
            from attnsift.indexes.plaid_index import PlaidIndex

            index = PlaidIndex.load(path, info, mmap=mmap)
        else:
            from attnsift.indexes.token_index import TokenIndex

            index = TokenIndex.load(path, info, mmap=mmap)
        docs = open_store(path, doc_count, index.num_docs, "token offsets")  # memory-mapped
        query_encoder = load_encoder(encoder, menc, device=device, dtype=dtype)
        check_encoder(query_encoder, menc, manifest.get("probe"), path)
        given, options = split_plaid_options(options)
        recorded = {"candidate_k": manifest.get("candidate_k", 32), "normalize": manifest.get("score_normalize", "none")}
        config = config_from_options(LateInteractionConfig, {**recorded, **options})
        if not plaid_mode:
            return cls(query_encoder, index, docs, config=config, probe=manifest.get("probe"))
        plaid = plaid_config({**(manifest.get("plaid") or {}), **given})
        return cls(query_encoder, index, docs, config=config, probe=manifest.get("probe"), plaid=plaid)
