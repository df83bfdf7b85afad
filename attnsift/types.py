"""Core types: documents, queries, candidates, rankings and runs.

All ids are strings. Types are frozen dataclasses so they can be shared between threads and cached
without defensive copies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable


def _check_id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{what} must be a string id, got {type(value).__name__}: {value!r}")
    value = str(value)
    if value == "" or any(c.isspace() for c in value):
        raise ValueError(
            f"{what} must be a non-empty string without whitespace (TREC files are whitespace-separated), "
            f"got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Document:
    """A document of a corpus.

    Parameters
    ----------
    id : str
        Unique id within the corpus (no whitespace).
    text : str
        The body text.
    title : str, optional
        The title, when the collection has one.
    metadata : mapping
        Anything else the collection provides (url, ...). Not used for scoring.
    """

    id: str
    text: str
    title: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", _check_id(self.id, "Document.id"))
        if not isinstance(self.text, str):
            raise TypeError(f"Document.text must be str, got {type(self.text).__name__} (document {self.id!r})")
        if self.title is not None and not isinstance(self.title, str):
            raise TypeError(f"Document.title must be str or None, got {type(self.title).__name__}")

    @property
    def contents(self) -> str:
        """Title and text joined the way BEIR does for lexical retrieval (title first)."""
        if self.title:
            return f"{self.title} {self.text}" if self.text else self.title
        return self.text


@dataclass(frozen=True)
class Query:
    """A query: an id and its text.

    ``text`` is None when only the id is known: a run read from a file without the data set's queries
    names its queries by id alone. Such a query can be evaluated, never searched for or reranked (see
    :func:`missing_query_text`); a given text must be non-empty.
    """

    id: str
    text: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", _check_id(self.id, "Query.id"))
        if self.text is None:
            return
        if not isinstance(self.text, str):
            raise TypeError(f"Query.text must be str or None, got {type(self.text).__name__} (query {self.id!r})")
        if not self.text.strip():
            raise ValueError(f"Query {self.id!r} has empty text; give every query some words to search for.")


def missing_query_text(query_id: str, source: str | None = None) -> ValueError:
    """The error for a query that must be searched for or reranked but carries only its id.

    Parameters
    ----------
    query_id : str
        The query without text.
    source : str, optional
        Where the query came from (a run's name or file), for the message.

    Returns
    -------
    ValueError
        To raise; every stage that needs query text says the same thing.
    """
    where = f"run {source!r}" if source else "a run read from a file"
    return ValueError(
        f"{where} has no query text for {query_id!r} (run files name queries by id only); give the data set's "
        "queries: --dataset on the CLI, read_run(path, queries=dataset.queries) or Pipeline(run).run(dataset.queries)"
    )


@dataclass(frozen=True)
class Candidate:
    """A scored document in a ranking. ``document`` carries the text when a stage needs it."""

    doc_id: str
    score: float
    document: Document | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "doc_id", _check_id(self.doc_id, "Candidate.doc_id"))
        try:
            score = float(self.score)
        except (TypeError, ValueError):
            raise TypeError(f"Candidate.score must be a number, got {self.score!r} (doc {self.doc_id!r})") from None
        if math.isnan(score):
            raise ValueError(f"Candidate {self.doc_id!r} has a NaN score; a scorer produced an invalid value.")
        object.__setattr__(self, "score", score)
        if self.document is not None and self.document.id != self.doc_id:
            raise ValueError(
                f"Candidate.doc_id {self.doc_id!r} does not match its document's id {self.document.id!r}"
            )

    @property
    def text(self) -> str | None:
        return None if self.document is None else self.document.text


def _sort_key(c: Candidate) -> tuple[float, str]:
    return (-c.score, c.doc_id)


@dataclass(frozen=True)
class Ranking:
    """Candidates for one query, sorted by score (descending), ties broken by doc_id (ascending).

    Sorting happens at construction, so a Ranking is always well-formed; duplicate doc ids are an
    error.

    A first stage that already holds its results as arrays builds the Ranking with
    :meth:`presorted`: the :class:`Candidate` objects are then made the first time ``candidates`` (or
    iteration, indexing, equality, repr) needs them, while ``len``, ``doc_ids``, ``scores()`` and
    ``top(k)`` read the arrays. Either way the Ranking is the same value (equal, same hash, same
    candidates, picklable).
    """

    query: Query
    # default_factory (not a class-level default) so that a lazy Ranking's missing ``candidates``
    # reaches __getattr__ instead of a class attribute
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.query, Query):
            raise TypeError(f"Ranking.query must be a Query, got {type(self.query).__name__}")
        cands = tuple(self.candidates)
        for c in cands:
            if not isinstance(c, Candidate):
                raise TypeError(f"Ranking.candidates must hold Candidate objects, got {type(c).__name__}")
        seen: set[str] = set()
        for c in cands:
            if c.doc_id in seen:
                raise ValueError(
                    f"Ranking for query {self.query.id!r} lists document {c.doc_id!r} twice; "
                    "deduplicate the candidates (keep the best score) before building a Ranking."
                )
            seen.add(c.doc_id)
        object.__setattr__(self, "candidates", tuple(sorted(cands, key=_sort_key)))

    # ------------------------------------------------------------------ lazy (columnar) rankings
    @classmethod
    def presorted(cls, query: Query, doc_ids: Sequence[str], scores: Any,
                  documents: Sequence[Document | None] | Callable[[Sequence[str]], Sequence[Document | None]] | None = None,
                  *, check: bool = True) -> "Ranking":
        """A Ranking over results a first stage already holds sorted, as arrays (no Candidate made yet).

        Parameters
        ----------
        query : Query
        doc_ids : sequence of str
            ``[n]`` document ids, best first, unique, ties (equal scores) in ascending id order.
        scores : array-like of float
            ``[n]`` scores, non-increasing (a numpy array stays one until candidates are needed).
        documents : sequence, callable or None
            ``[n]`` Documents (or None) aligned with ``doc_ids``, or a function ``doc_ids -> that``
            called when the candidates are first made; None: candidates carry no document.
        check : bool
            Check the order, uniqueness, ids and scores (linear; a first stage whose index
            guarantees them passes False).

        Raises
        ------
        ValueError / TypeError
            With ``check``: lengths that differ, a NaN, an order that is not score-descending with
            ties by id, a duplicate or malformed id.
        """
        if not isinstance(query, Query):
            raise TypeError(f"Ranking.query must be a Query, got {type(query).__name__}")
        if check:
            _check_presorted(query, doc_ids, scores, documents)
        self = object.__new__(cls)
        self.__dict__["query"] = query
        self.__dict__["_columns"] = (doc_ids, scores, documents)
        return self

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: a lazy Ranking's candidates not made yet
        if name == "candidates":
            columns = self.__dict__.get("_columns")
            if columns is not None:
                return self._materialise(columns)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _materialise(self, columns: tuple) -> tuple[Candidate, ...]:
        ids, scores, documents = columns
        if callable(documents):
            documents = documents(ids)
        values = scores.tolist() if hasattr(scores, "tolist") else [float(s) for s in scores]
        new = object.__new__
        out: list[Candidate] = []
        append = out.append
        docs = documents if documents is not None else (None,) * len(values)
        # the producer guarantees valid ids and finite float scores in order: skip re-validation
        for did, s, doc in zip(ids, values, docs):
            c = new(Candidate)
            d = c.__dict__
            d["doc_id"] = did
            d["score"] = s
            d["document"] = doc
            append(c)
        cands = tuple(out)
        self.__dict__["candidates"] = cands  # concurrent callers make equal tuples; either may win
        return cands

    def __getstate__(self) -> dict[str, Any]:
        return {"query": self.query, "candidates": self.candidates}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        d = self.__dict__
        if "candidates" in d:
            return len(d["candidates"])
        return len(d["_columns"][0])

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.candidates)

    def __getitem__(self, i: int) -> Candidate:
        return self.candidates[i]

    @property
    def doc_ids(self) -> list[str]:
        d = self.__dict__
        if "candidates" not in d:
            return list(d["_columns"][0])
        return [c.doc_id for c in d["candidates"]]

    def top(self, k: int | None) -> "Ranking":
        """The best ``k`` candidates (all when ``k`` is None)."""
        if k is None:
            return self
        k = check_k(k)
        d = self.__dict__
        if "candidates" not in d:
            ids, scores, documents = d["_columns"]
            if k >= len(ids):
                return self
            docs = documents if documents is None or callable(documents) else documents[:k]
            return Ranking.presorted(self.query, ids[:k], scores[:k], docs, check=False)
        return Ranking(self.query, self.candidates[:k])

    def scores(self) -> dict[str, float]:
        d = self.__dict__
        if "candidates" not in d:
            ids, scores, _ = d["_columns"]
            return dict(zip(ids, scores.tolist() if hasattr(scores, "tolist") else map(float, scores)))
        return {c.doc_id: c.score for c in self.candidates}

    def with_documents(self, lookup: Mapping[str, Document] | Any) -> "Ranking":
        """Attach documents from ``lookup`` (a mapping or a Corpus) to candidates that have none."""
        out = []
        for c in self.candidates:
            if c.document is None:
                try:
                    doc = lookup[c.doc_id]
                except KeyError:
                    raise KeyError(
                        f"document {c.doc_id!r} (query {self.query.id!r}) is not in the corpus given to attach texts"
                    ) from None
                c = Candidate(c.doc_id, c.score, doc)
            out.append(c)
        return Ranking(self.query, tuple(out))


def _check_presorted(query: Query, doc_ids: Sequence[str], scores: Any, documents: Any) -> None:
    import numpy as np

    n = len(doc_ids)
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"Ranking.presorted: {n} doc ids but scores of shape {values.shape} (query {query.id!r})")
    if documents is not None and not callable(documents) and len(documents) != n:
        raise ValueError(f"Ranking.presorted: {n} doc ids but {len(documents)} documents (query {query.id!r})")
    if np.isnan(values).any():
        raise ValueError(f"Ranking.presorted: a NaN score for query {query.id!r}; a scorer produced an invalid value.")
    for did in doc_ids:
        if type(did) is not str:  # exactly str: numpy's str_ would leak into Candidate.doc_id
            raise TypeError(f"Ranking.presorted takes str doc ids, got {type(did).__name__}: {did!r}")
    if len(set(doc_ids)) != n:
        raise ValueError(f"Ranking for query {query.id!r} lists a document twice; deduplicate the candidates first")
    step = np.diff(values)
    if (step > 0).any():
        raise ValueError(f"Ranking.presorted: scores for query {query.id!r} are not in descending order")
    for j in np.flatnonzero(step == 0).tolist():
        if not doc_ids[j] < doc_ids[j + 1]:
            raise ValueError(f"Ranking.presorted: tied scores for query {query.id!r} are not in ascending doc-id order "
                             f"({doc_ids[j]!r} before {doc_ids[j + 1]!r})")
    for did in doc_ids:
        if not did or any(c.isspace() for c in did):
            _check_id(did, "Candidate.doc_id")


def check_k(k: Any, name: str = "k") -> int:
    """Validate a cut-off: a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"{name} must be a positive integer (1 or more), got {k}")
    return k


class Run(Mapping[str, Ranking]):
    """Rankings for many queries: a read-only mapping ``query_id -> Ranking``.

    Insertion order of queries is kept.
    """

    def __init__(self, rankings: Iterable[Ranking] | Mapping[str, Ranking] = (), name: str = "attnsift"):
        if isinstance(rankings, Mapping):
            rankings = rankings.values()
        self._rankings: dict[str, Ranking] = {}
        for r in rankings:
            if not isinstance(r, Ranking):
                raise TypeError(f"Run holds Ranking objects, got {type(r).__name__}")
            if r.query.id in self._rankings:
                raise ValueError(f"Run has two rankings for query {r.query.id!r}")
            self._rankings[r.query.id] = r
        self.name = name

    def __getitem__(self, qid: str) -> Ranking:
        return self._rankings[qid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rankings)

    def __len__(self) -> int:
        return len(self._rankings)

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, queries={len(self)})"

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{query_id: {doc_id: score}}``, the form ir_measures and pytrec_eval take."""
        return {qid: r.scores() for qid, r in self._rankings.items()}

    def top(self, k: int | None) -> "Run":
        return Run((r.top(k) for r in self._rankings.values()), name=self.name)

    @classmethod
    def from_dict(
        cls, scores: Mapping[str, Mapping[str, float]], queries: Mapping[str, Query] | None = None, name: str = "attnsift"
    ) -> "Run":
        """A Run from ``{query_id: {doc_id: score}}``; queries not in ``queries`` carry only their id (no text)."""
        rankings = []
        for qid, docs in scores.items():
            q = queries[qid] if queries is not None and qid in queries else Query(qid)
            rankings.append(Ranking(q, tuple(Candidate(d, s) for d, s in docs.items())))
        return cls(rankings, name=name)


@runtime_checkable
class Retriever(Protocol):
    """First stage: finds candidates for a query in a corpus."""

    def retrieve(self, query: Query | str, k: int = 100) -> Ranking: ...

    def retrieve_batch(self, queries: Sequence[Query], k: int = 100) -> Run: ...


@runtime_checkable
class Reranker(Protocol):
    """Second stage: re-scores the candidates of a Ranking."""

    def rerank(self, ranking: Ranking, k: int | None = None) -> Ranking: ...

    def rerank_batch(self, run: Run, k: int | None = None) -> Run: ...


def as_query(query: Query | str, default_id: str = "q0") -> Query:
    if isinstance(query, Query):
        return query
    if isinstance(query, str):
        return Query(default_id, query)
    raise TypeError(f"expected a Query or a str, got {type(query).__name__}")
