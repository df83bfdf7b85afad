"""The options of every first stage, as frozen configs built with :func:`attnsift.config.config_from_options`.

One class per component; each rejects out-of-range values and contradictory combinations in its
``validate()`` (run for every config, however it was built), with messages that list what is accepted:

=========================  ==============================================================
:class:`BM25Config`        ``BM25Retriever`` / ``LuceneBM25Retriever``
:class:`EncoderConfig`     ``Encoder`` (dense and late-interaction text encoders)
:class:`DenseConfig`       ``DenseRetriever.from_corpus``: faiss index + encoder overrides
:class:`LateInteractionConfig`  ``LateInteractionRetriever``: token index, MaxSim search
:class:`FusionConfig`      ``FusionRetriever`` (and ``hybrid``: BM25 + dense)
=========================  ==============================================================

Fields left at ``None`` mean "the component's default" (named in each docstring), so that an option
that does not apply can be told apart from one that was never given.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from attnsift.config import Config

BM25Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
BM25_METHODS: tuple[str, ...] = ("lucene", "robertson", "atire", "bm25l", "bm25+")
NONOCCURRENCE_METHODS = ("bm25l", "bm25+")
DEFAULT_DELTA = 0.5
Pooling = Literal["auto", "mean", "cls", "max", "lasttoken"]
DEFAULT_RRF_K = 60.0
DEFAULT_NORMALIZATION = "minmax"

#: faiss build options (see :meth:`attnsift.indexes.faiss_index.FaissIndex.build`), by the index type they apply to.
HNSW_OPTIONS = ("hnsw_m", "ef_construction", "ef_search")
IVFPQ_OPTIONS = ("nlist", "pq_m", "nbits", "nprobe", "train_size", "seed")
#: Dense IVF-PQ's re-ranking stage (:mod:`attnsift.indexes.faiss_refine`): the second copy, the candidates re-scored.
REFINE_OPTIONS = ("refine", "k_factor")
#: Search-time faiss options: a loaded index takes them (``nprobe`` for ivfpq, ``ef_search`` for hnsw,
#: ``k_factor`` for an ivfpq index built with ``refine``).
FAISS_SEARCH_OPTIONS = ("nprobe", "ef_search", "k_factor")
#: Short spellings (faiss's own names): ``index`` for ``index_type``; ``m`` for ``pq_m`` (ivfpq) or ``hnsw_m`` (hnsw).
FAISS_ALIASES = ("index", "m")
#: Encoder options a dense / late-interaction config may override.
ENCODER_OPTIONS = ("batch_size", "max_length", "query_prefix", "doc_prefix", "pooling", "backend", "threads")
#: What runs an encoder's forward pass (:class:`attnsift.retrieval.encoders.Encoder`).
EncoderBackend = Literal["torch", "onnx", "onnx-int8", "onnx-int8-block", "onnx-int8-mixed", "onnx-int8-token"]


def check_bm25_params(k1: Any, b: Any, **more: Any) -> None:
    """Reject BM25 parameters that are not finite numbers, ``k1 < 0`` or ``b`` outside [0, 1]
    (shared by the bm25s and the Lucene backends; ``more``: other numeric parameters, e.g. ``delta``)."""
    for pname, value in {"k1": k1, "b": b, **more}.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"{pname} must be a finite number, got {value!r}")
    if k1 < 0:
        raise ValueError(f"k1 must be >= 0 (Anserini's BEIR setting is 0.9), got {k1}")
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"b must be in [0, 1] (Anserini's BEIR setting is 0.4), got {b}")


def _check_positive(owner: Config, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(owner, name)
        if value is not None and value < minimum:
            raise ValueError(f"{type(owner).__name__}.{name} must be an integer >= {minimum}, got {value}")


def _check_encoder_fields(owner: Config) -> None:
    _check_positive(owner, ("batch_size",))
    _check_positive(owner, ("max_length",), minimum=2)  # room for the special tokens


@dataclass(frozen=True)
class BM25Config(Config):
    """BM25 scoring and analysis.

    Attributes
    ----------
    k1 : float
        Term-frequency saturation (>= 0) [0.9, Anserini's BEIR setting].
    b : float
        Length normalisation in [0, 1] [0.4].
    method : {"lucene", "robertson", "atire", "bm25l", "bm25+"}
        bm25s scoring variant ["lucene": Lucene/Anserini's formula].
    stemmer : str or None
        PyStemmer algorithm ["porter": Lucene's PorterStemFilter]; None: no stemming.
    stopwords : {"en", "lucene"} or None
        Lucene's 33-word English stop set ["en"]; None keeps every token.
    store_text : bool
        Keep the documents, so candidates carry their Document (rerankers need the text) [True].
    delta : float or None
        The delta of BM25L / BM25+ [None: 0.5]; only for those two methods.
    """

    k1: float = 0.9
    b: float = 0.4
    method: BM25Method = "lucene"
    stemmer: str | None = "porter"
    stopwords: Literal["en", "lucene"] | None = "en"
    store_text: bool = True
    delta: float | None = None

    def validate(self) -> None:
        check_bm25_params(self.k1, self.b, delta=self.effective_delta)
        if self.delta is not None and self.method not in NONOCCURRENCE_METHODS:
            raise ValueError(
                f"delta={self.delta} applies to method bm25l or bm25+ only, got method={self.method!r}; "
                "drop delta or choose one of those methods"
            )

    @property
    def effective_delta(self) -> float:
        """``delta``, or its default 0.5 (what bm25s is given for every method)."""
        return DEFAULT_DELTA if self.delta is None else self.delta


@dataclass(frozen=True)
class EncoderConfig(Config):
    """A text encoder's options (:class:`attnsift.retrieval.encoders.Encoder`).

    Attributes
    ----------
    batch_size : int
        Texts per forward pass [64].
    max_length : int or None
        Token limit per text (>= 2); None: the sentence-transformers ``max_seq_length``, else the
        tokenizer's limit capped at 512.
    query_prefix, doc_prefix : str
        Prepended to queries / documents (e5: ``"query: "`` / ``"passage: "``) [""].
    normalize : bool
        L2-normalise sentence vectors (inner product = cosine) [True].
    pooling : {"auto", "mean", "cls", "max", "lasttoken"}
        ["auto": the sentence-transformers pooling config, else mean].
    """

    batch_size: int = 64
    max_length: int | None = None
    query_prefix: str = ""
    doc_prefix: str = ""
    normalize: bool = True
    pooling: Pooling = "auto"

    def validate(self) -> None:
        _check_encoder_fields(self)


@dataclass(frozen=True)
class _EncodedIndexConfig(Config):
    """What dense and late-interaction indexes share: an encoding cache, encoder overrides, faiss options.

    Encoder fields left at None keep the encoder's defaults (:class:`EncoderConfig`); they are an
    error when the model given is an already built Encoder. ``backend`` (``torch``, ``onnx``,
    ``onnx-int8``, ``onnx-int8-block``, ``onnx-int8-mixed``, ``onnx-int8-token``) and ``threads`` (ONNX Runtime's) choose what
    runs the encoder. faiss fields left at None keep :meth:`FaissIndex.build`'s defaults. ``cache=False`` with a ``cache_dir`` is a contradiction.
    ``index`` and ``m`` are faiss's short spellings (:data:`FAISS_ALIASES`), resolved at construction
    into ``index_type`` and ``pq_m`` / ``hnsw_m`` (they read None afterwards).
    """

    cache: bool = True
    cache_dir: str | Path | None = None
    batch_size: int | None = None
    max_length: int | None = None
    query_prefix: str | None = None
    doc_prefix: str | None = None
    pooling: Pooling | None = None
    backend: EncoderBackend | None = None
    threads: int | None = None
    hnsw_m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None
    nlist: int | None = None
    pq_m: int | None = None
    nbits: int | None = None
    nprobe: int | None = None
    train_size: int | None = None
    seed: int | None = None
    index: str | None = None
    m: int | None = None

    def _resolve_aliases(self) -> None:
        types_here = typing.get_args(typing.get_type_hints(type(self))["index_type"])
        default = next(f.default for f in dataclasses.fields(self) if f.name == "index_type")
        if self.index is not None:
            if self.index not in types_here:
                raise ValueError(f"index={self.index!r}: expected one of {', '.join(map(repr, types_here))}")
            if self.index_type not in (default, self.index):
                raise ValueError(f"index={self.index!r} and index_type={self.index_type!r} disagree; give one of them")
            object.__setattr__(self, "index_type", self.index)
            object.__setattr__(self, "index", None)
        if self.m is not None:
            target = {"hnsw": "hnsw_m", "ivfpq": "pq_m", "auto": "pq_m"}.get(self.index_type)
            if target is None:
                raise ValueError(f"m={self.m} (faiss's M) applies to index_type ivfpq (sub-quantisers) or hnsw (graph "
                                 f"degree), got index_type={self.index_type!r}; drop m or change index_type")
            if getattr(self, target) not in (None, self.m):
                raise ValueError(f"m={self.m} and {target}={getattr(self, target)} disagree; give one of them")
            object.__setattr__(self, target, self.m)
            object.__setattr__(self, "m", None)

    def validate(self) -> None:
        self._resolve_aliases()
        if not self.cache and self.cache_dir is not None:
            raise ValueError(
                f"cache=False turns the encoding cache off, but cache_dir={str(self.cache_dir)!r} was given; drop one of them"
            )
        _check_encoder_fields(self)
        _check_positive(self, ("threads", *(n for n in HNSW_OPTIONS + IVFPQ_OPTIONS if n != "seed")))
        index_type = getattr(self, "index_type")
        types_here = typing.get_args(typing.get_type_hints(type(self))["index_type"])
        for names, applies in ((HNSW_OPTIONS, ("hnsw",)), (IVFPQ_OPTIONS, ("ivfpq", "auto"))):
            applies = tuple(t for t in applies if t in types_here)  # "auto" may pick ivfpq (late interaction)
            given = [n for n in names if getattr(self, n) is not None]
            if given and index_type not in applies:
                raise ValueError(
                    f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to index_type "
                    f"{' or '.join(applies)}, got index_type={index_type!r}; drop {'it' if len(given) == 1 else 'them'} "
                    "or change index_type"
                )

    def encoder_options(self) -> dict[str, Any]:
        """The encoder fields that were given (for :class:`EncoderConfig`)."""
        return {n: getattr(self, n) for n in ENCODER_OPTIONS if getattr(self, n) is not None}

    def index_options(self) -> dict[str, Any]:
        """The faiss build options that were given."""
        return {n: getattr(self, n) for n in HNSW_OPTIONS + IVFPQ_OPTIONS if getattr(self, n) is not None}


@dataclass(frozen=True)
class DenseConfig(_EncodedIndexConfig):
    """Options of :meth:`DenseRetriever.from_corpus <attnsift.retrieval.dense.DenseRetriever.from_corpus>`.

    Attributes
    ----------
    index_type : {"flat", "hnsw", "ivfpq"}
        ["flat": exact inner product].
    normalize : bool or None
        The encoder's L2 normalisation of sentence vectors [None: True].
    cache : bool
        Cache the encoded corpus, so a second run on the same texts with the same encoder loads the
        vectors instead of encoding again [True]. False encodes in memory every time.
    cache_dir : path or None
        Where to keep the encoded chunks (a rerun resumes from them) [None: a folder keyed by the texts
        and the encoder under ``$ATTNSIFT_CACHE/encodings``, see
        :func:`attnsift.retrieval.encoding_cache.default_cache_dir`].
    batch_size, max_length, query_prefix, doc_prefix, pooling
        Encoder overrides (see :class:`EncoderConfig`).
    hnsw_m, ef_construction, ef_search
        HNSW options (``index_type="hnsw"`` only): graph degree (M) [32], build and search beam widths
        (efConstruction [200], efSearch [128]).
    nlist, pq_m, nbits, nprobe, train_size, seed
        IVF-PQ options (``index_type="ivfpq"`` only): inverted lists [~4 sqrt(N)], sub-quantisers (M,
        a divisor of the dimension) [~dim / 8], bits per code [8], lists probed per query [16],
        vectors sampled to train [100,000], sampling and k-means seed [0]. Checked against the corpus
        size and the encoder's dimension before any encoding
        (:func:`attnsift.indexes.faiss_index.resolve_index_params`).
    refine : {"sq8", "fp16", "flat"} or None
        IVF-PQ only: keep a second, finer copy of every vector (8-bit scalar quantised: ``dim`` bytes per
        vector; 16-bit floats; the float32 vectors) and re-score the PQ candidates with it [None: the PQ
        codes alone]. Refused in one line when it would not fit in RAM.
    k_factor : int or None
        With ``refine``: PQ candidates re-scored per result (``k_factor * k`` of them) [8].
    index, m
        Short spellings: ``index=ivfpq`` is ``index_type=ivfpq``; ``m`` is ``pq_m`` (ivfpq) or
        ``hnsw_m`` (hnsw).

    ``nprobe``, ``ef_search`` and ``k_factor`` (:data:`FAISS_SEARCH_OPTIONS`) also apply to a loaded index.
    """

    index_type: Literal["flat", "hnsw", "ivfpq"] = "flat"
    normalize: bool | None = None
    refine: Literal["sq8", "fp16", "flat"] | None = None
    k_factor: int | None = None

    def validate(self) -> None:
        super().validate()
        _check_positive(self, ("k_factor",))
        if self.refine is not None and self.index_type != "ivfpq":
            raise ValueError(f"refine={self.refine} re-scores an IVF-PQ index's candidates; got index_type="
                             f"{self.index_type!r}: give index_type=ivfpq (index=ivfpq) or drop refine")
        if self.k_factor is not None and self.refine is None:
            raise ValueError(f"k_factor={self.k_factor} sets how many PQ candidates refine re-scores; give refine=sq8 "
                             "(or fp16, flat) with index_type=ivfpq, or drop k_factor")

    def index_options(self) -> dict[str, Any]:
        out = super().index_options()
        out.update({n: getattr(self, n) for n in REFINE_OPTIONS if getattr(self, n) is not None})
        return out

    def encoder_options(self) -> dict[str, Any]:
        out = super().encoder_options()
        if self.normalize is not None:
            out["normalize"] = self.normalize
        return out


@dataclass(frozen=True)
class LateInteractionConfig(_EncodedIndexConfig):
    """Options of :class:`LateInteractionRetriever <attnsift.retrieval.late_interaction.LateInteractionRetriever>`.

    Attributes
    ----------
    index_type : {"auto", "flat", "hnsw", "ivfpq"}
        ANN index over token vectors ["auto": flat up to 200K tokens, else IVF-PQ].
    candidate_k : int
        Nearest document tokens fetched per query token for candidate generation [32].
    normalize : {"none", "query_length"}
        Divide MaxSim by the number of real query tokens ["none"].
    impl : {"auto", "reference", "triton", "numba", "int16", "numpy"}
        MaxSim implementation ["auto": a plaid index's compiled CPU kernels (the int16 table) when numba is installed, else its
        numpy path; Triton on a GPU]. ``numba`` (float32 tables), ``int16`` (int16 tables) and ``numpy``
        force a plaid index's CPU path and apply to plaid indexes only.
    cache, cache_dir, batch_size, max_length, query_prefix, doc_prefix, pooling, faiss options
        As in :class:`DenseConfig` (token vectors are always L2-normalised; the token cache is large:
        about ``2 * dim`` bytes per token).

    Only ``candidate_k``, ``normalize`` and ``impl`` (:data:`SEARCH_OPTIONS`) apply to a loaded index.
    """

    SEARCH_OPTIONS = ("candidate_k", "normalize", "impl")

    index_type: Literal["auto", "flat", "hnsw", "ivfpq"] = "auto"
    candidate_k: int = 32
    normalize: Literal["none", "query_length"] = "none"
    impl: Literal["auto", "reference", "triton", "numba", "int16", "numpy"] = "auto"

    def validate(self) -> None:
        super().validate()
        _check_positive(self, ("candidate_k",))

    def search_options(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.SEARCH_OPTIONS}


@dataclass(frozen=True)
class FusionConfig(Config):
    """Options of :class:`FusionRetriever <attnsift.retrieval.fusion.FusionRetriever>`.

    Attributes
    ----------
    method : {"rrf", "score"}
        Reciprocal rank fusion, or a weighted sum of normalised scores ["rrf"].
    weights : tuple of float or None
        One per retriever, finite, >= 0, not all 0 [None: 1 each].
    rrf_k : float or None
        The RRF constant, >= 0 [None: 60]; ``method="rrf"`` only.
    depth : int
        Candidates taken from each retriever before fusing [100].
    normalization : {"minmax", "zscore", "none"} or None
        Per-ranking score normalisation [None: "minmax"]; ``method="score"`` only.
    """

    method: Literal["rrf", "score"] = "rrf"
    weights: tuple[float, ...] | None = None
    rrf_k: float | None = None
    depth: int = 100
    normalization: Literal["minmax", "zscore", "none"] | None = None

    def validate(self) -> None:
        if self.weights is not None:
            w = list(self.weights)
            if not w or any(not math.isfinite(x) or x < 0 for x in w) or not any(x > 0 for x in w):
                raise ValueError(f"FusionConfig.weights must be finite, >= 0 and not all 0, got {w}")
        if self.rrf_k is not None and (not math.isfinite(self.rrf_k) or self.rrf_k < 0):
            raise ValueError(f"FusionConfig.rrf_k must be a finite number >= 0 (60 in the RRF paper), got {self.rrf_k}")
        _check_positive(self, ("depth",))
        if self.method == "score" and self.rrf_k is not None:
            raise ValueError("rrf_k applies to method=rrf only, got method='score'; drop rrf_k or use method=rrf")
        if self.method == "rrf" and self.normalization is not None:
            raise ValueError(
                f"normalization={self.normalization!r} applies to method=score only, got method='rrf'; "
                "drop normalization or use method=score"
            )

    @property
    def effective_rrf_k(self) -> float:
        return DEFAULT_RRF_K if self.rrf_k is None else self.rrf_k

    @property
    def effective_normalization(self) -> str:
        return DEFAULT_NORMALIZATION if self.normalization is None else self.normalization

    def weights_for(self, n: int) -> list[float]:
        """The weights for ``n`` retrievers (1 each by default); a count other than ``n`` is a ValueError."""
        if self.weights is None:
            return [1.0] * n
        if len(self.weights) != n:
            raise ValueError(f"got {len(self.weights)} fusion weights for {n} retrievers (rankings to fuse); give one weight each")
        return list(self.weights)
