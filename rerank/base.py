"""Shared machinery for rerankers: top-k handling, batching, input checks, and the count of cut documents.

Cut documents: an LLM reranker reads each candidate only up to a limit (``max_words``, a token budget).
Every reranker counts what it cut (:attr:`BaseReranker.truncation`), and a run of many queries
(:meth:`BaseReranker.rerank_batch`, :meth:`attnsift.Pipeline.stream` through
:meth:`BaseReranker.truncation_run`) ends with ONE warning through :func:`warn_truncation` that says how
many documents were cut, to what, and which option changes it. Outside a run, the first cut an
instance makes is reported at once (later ones are only counted).
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from attnsift.concurrency import in_thread, shared_lock
from attnsift.types import Candidate, Ranking, Run, check_k, missing_query_text


@dataclass(frozen=True)
class Reranked:
    """What one reranking produced: the ranking and the seconds its scoring cost.

    ``seconds`` is the compute the scores took, also when they were served from a shared
    computation (two ICR calibrations share one forward pass; each reports that pass's cost).
    """

    ranking: Ranking
    seconds: float


#: The logger of the cut warnings (one line per run; the CLI shows WARNING records on stderr).
truncation_log = logging.getLogger("attnsift.rerank.truncation")

UNITS = ("words", "tokens")


@dataclass(frozen=True)
class DocumentCut:
    """How much of one candidate document a prompt holds.

    ``words`` / ``words_kept``: whitespace words of the document text before and after the word cut;
    ``tokens`` / ``tokens_kept``: tokens of the word-cut text before and after the token cut (None:
    no token limit applied). A document is cut when it kept less than it had in either unit.
    """

    words: int
    words_kept: int
    tokens: int | None = None
    tokens_kept: int | None = None

    @property
    def cut(self) -> bool:
        return self.words_kept < self.words or (self.tokens is not None and self.tokens_kept < self.tokens)


class TruncationCount:
    """Counts of cut candidate documents (mutable; one per reranker instance).

    :meth:`as_dict` is the figure readers use (``reranker.truncation``)::

        {"documents": 600,        # candidate documents scored (a document in two queries counts twice)
         "cut": 412,              # of them, documents the prompts hold only in part (either unit)
         "unit": "words",         # unit of limit / longest: "words" when any word cut, else "tokens"
         "limit": 300,            # the (smallest) limit applied in that unit
         "longest": 1950,         # the longest cut document in that unit
         "words":  {"cut": 412, "limit": 300, "longest": 1950},
         "tokens": {"cut": 0, "limit": None, "longest": None}}

    ``unit``, ``limit`` and ``longest`` are None when nothing was cut. Token counts are of the text
    after the word cut.
    """

    def __init__(self, owner: Any = None) -> None:
        self.owner = owner
        self.reset()

    def reset(self) -> None:
        self.documents = 0
        self.cut = 0
        self.units = {u: {"cut": 0, "limit": None, "longest": None} for u in UNITS}

    def add(self, cuts: Iterable[DocumentCut], word_limit: int | None = None, token_limit: int | None = None) -> None:
        """Count one scored list's ``cuts`` (one per candidate); the limits are those the prompt applied."""
        for c in cuts:
            self.documents += 1
            self.cut += c.cut
            for unit, had, kept, limit in (("words", c.words, c.words_kept, word_limit),
                                           ("tokens", c.tokens, c.tokens_kept, token_limit)):
                if had is None or kept >= had:
                    continue
                u = self.units[unit]
                u["cut"] += 1
                u["longest"] = max(u["longest"] or 0, had)
                lim = kept if limit is None else limit
                u["limit"] = lim if u["limit"] is None else min(u["limit"], lim)

    def as_dict(self) -> dict[str, Any]:
        unit = "words" if self.units["words"]["cut"] else "tokens" if self.units["tokens"]["cut"] else None
        main = self.units[unit] if unit else {"limit": None, "longest": None}
        return {"documents": self.documents, "cut": self.cut, "unit": unit, "limit": main["limit"],
                "longest": main["longest"], **{u: dict(v) for u, v in self.units.items()}}


def truncation_message(name: str, figure: dict[str, Any], hint: str) -> str | None:
    """The one-line report of ``figure`` (:meth:`TruncationCount.as_dict`), or None when nothing was cut.

    E.g. ``icr cut 412 of 600 candidate documents to 300 words (the longest had 1,950); --option
    max_words= or --option passages=max changes this``.
    """
    if not figure["cut"]:
        return None
    parts = []
    for unit in UNITS:
        u = figure[unit]
        if u["cut"]:
            parts.append(f"{u['cut']:,} to {u['limit']:,} {unit} (the longest had {u['longest']:,})")
    n, total = figure["cut"], figure["documents"]
    if len(parts) == 1:
        what = parts[0].split(" ", 1)[1]
        return f"{name} cut {n:,} of {total:,} candidate documents {what}; {hint}"
    return f"{name} cut {n:,} of {total:,} candidate documents: {', '.join(parts)}; {hint}"


def warn_truncation(reranker: Any) -> str | None:
    """Log ``reranker``'s cut documents as ONE warning (nothing when none was cut); the line logged.

    The single place cut warnings are emitted (logger ``attnsift.rerank.truncation``)."""
    figure = getattr(reranker, "truncation", None)
    if not figure:
        return None
    msg = truncation_message(getattr(reranker, "name", type(reranker).__name__), figure,
                             getattr(reranker, "truncation_hint", "--option max_words= changes this"))
    if msg:
        truncation_log.warning(msg)
    return msg


class BaseReranker:
    """Implements :class:`attnsift.Reranker` on top of :meth:`score`.

    Subclasses implement ``score(ranking) -> list[float]``: one score per candidate of ``ranking``
    (in the ranking's order; the ranking holds only the candidates to rerank, all with text).

    ``rerank(ranking, k)`` rescores the top ``k`` candidates (all when ``k`` is None). The remaining
    candidates keep their first-stage order below them: their scores are replaced by values lower than
    every reranked score, so the output is one well-formed Ranking.
    """

    name = "reranker"
    needs_text = True
    #: what the cut warning tells the user to change
    truncation_hint = "--option max_words= changes this"

    # ------------------------------------------------------------------ cut documents
    def _truncation_count(self) -> TruncationCount:
        # Siblings (with_options) copy the instance dict: each keeps its own count.
        c = self.__dict__.get("_truncation")
        if c is None or c.owner is not self:
            c = self.__dict__["_truncation"] = TruncationCount(self)
        return c

    @property
    def truncation(self) -> dict[str, Any]:
        """The candidate documents this reranker cut since :meth:`reset_truncation` (or since it was made;
        a :meth:`truncation_run` starts from zero): see :class:`TruncationCount` for the keys."""
        return self._truncation_count().as_dict()

    def reset_truncation(self) -> None:
        """Start counting cut documents from zero."""
        self._truncation_count().reset()
        self.__dict__["_truncation_warned"] = False

    @contextlib.contextmanager
    def truncation_run(self) -> Iterator[None]:
        """A run of many queries: the count starts from zero, and ONE cut warning is logged at the end
        (also when the run stops early); no per-query warnings inside it."""
        self.reset_truncation()
        outer = self.__dict__.get("_in_run", False)
        self.__dict__["_in_run"] = True
        try:
            yield
        finally:
            self.__dict__["_in_run"] = outer
            if not outer:
                warn_truncation(self)
                self.__dict__["_truncation_warned"] = True

    def document_cuts(self, ranking: Ranking) -> list[DocumentCut] | None:
        """The cuts the last scoring of ``ranking`` made, one per candidate (None: this reranker cuts nothing).

        The default: what a subclass recorded with :meth:`_remember_cuts` for this very ranking, else
        the whitespace words of ``title + text`` against ``config.max_words`` (when the config has one)."""
        kept = self.__dict__.get("_last_cuts")
        if kept is not None and kept[0] is ranking:
            return kept[1]
        limit = getattr(getattr(self, "config", None), "max_words", None)
        if not isinstance(limit, int) or isinstance(limit, bool):
            return None
        out = []
        for c in ranking.candidates:
            doc = c.document
            n = len(((doc.title + " ") if doc.title else "").split()) + len(doc.text.split())
            out.append(DocumentCut(n, min(n, limit)))
        return out

    def _remember_cuts(self, ranking: Ranking, cuts: list[DocumentCut], token_limit: int | None = None) -> None:
        """Record the exact cuts of scoring ``ranking`` (read by :meth:`document_cuts`)."""
        self.__dict__["_last_cuts"] = (ranking, list(cuts), token_limit)

    def _count_cuts(self, ranking: Ranking) -> None:
        cuts = self.document_cuts(ranking)
        if not cuts:
            return
        kept = self.__dict__.get("_last_cuts")
        tokens = kept[2] if kept is not None and kept[0] is ranking else None
        limit = getattr(getattr(self, "config", None), "max_words", None)
        count = self._truncation_count()
        count.add(cuts, limit if isinstance(limit, int) else None, tokens)
        self.__dict__.pop("_last_cuts", None)
        if not self.__dict__.get("_in_run", False) and not self.__dict__.get("_truncation_warned", False) and count.cut:
            # Outside a run: say it at the first cut, once per instance (the count goes on in .truncation).
            self.__dict__["_truncation_warned"] = True
            warn_truncation(self)

    def score(self, ranking: Ranking) -> Sequence[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, ranking: Ranking) -> None:
        if not isinstance(ranking, Ranking):
            raise TypeError(f"rerank() takes a Ranking, got {type(ranking).__name__}")
        if self.needs_text:
            if ranking.query.text is None:
                raise missing_query_text(ranking.query.id)
            missing = [c.doc_id for c in ranking.candidates if c.document is None]
            if missing:
                raise ValueError(
                    f"{self.name}: candidates {missing[:5]} of query {ranking.query.id!r} carry no document text. "
                    "Attach texts with `ranking.with_documents(corpus)` or give Pipeline a corpus= "
                    "(retrievers built from a corpus attach them automatically)."
                )

    def score_timed(self, ranking: Ranking) -> tuple[Sequence[float], float]:
        """:meth:`score` and the seconds computing the scores cost (wall clock here; a reranker serving
        scores from a shared computation reports what that computation cost)."""
        t0 = time.perf_counter()
        scores = self.score(ranking)
        return scores, time.perf_counter() - t0

    def rerank(self, ranking: Ranking, k: int | None = None) -> Ranking:
        """Rescore the top ``k`` candidates (all when None); the rest keep their order below them."""
        return self.rerank_detailed(ranking, k).ranking

    def rerank_detailed(self, ranking: Ranking, k: int | None = None) -> Reranked:
        """:meth:`rerank` plus the seconds its scoring took (what benchmarks record per query)."""
        if k is not None:
            check_k(k)
        if not isinstance(ranking, Ranking):
            raise TypeError(f"rerank() takes a Ranking, got {type(ranking).__name__}")
        head = ranking.top(k)
        tail = ranking.candidates[len(head):]
        if len(head) == 0:
            return Reranked(ranking, 0.0)
        self._check(head)
        scores, seconds = self.score_timed(head)
        self._count_cuts(head)
        scores = list(scores)
        if len(scores) != len(head):
            raise RuntimeError(f"{self.name} returned {len(scores)} scores for {len(head)} candidates")
        new = [Candidate(c.doc_id, float(s), c.document) for c, s in zip(head.candidates, scores)]
        if tail:
            floor = min(c.score for c in new)
            # Tail keeps first-stage order strictly below every reranked candidate.
            new += [Candidate(c.doc_id, floor - 1.0 - i, c.document) for i, c in enumerate(tail)]
        return Reranked(Ranking(ranking.query, tuple(new)), seconds)

    async def arerank(self, ranking: Ranking, k: int | None = None) -> Ranking:
        """:meth:`rerank` without blocking the event loop: the model runs in a worker thread.

        Concurrent calls on one reranker (and its ``with_options`` siblings, which share the model) take
        turns on the model; the loop keeps serving other work meanwhile.
        """
        return (await self.arerank_detailed(ranking, k)).ranking

    async def arerank_detailed(self, ranking: Ranking, k: int | None = None) -> Reranked:
        """:meth:`rerank_detailed` in a worker thread (see :meth:`arerank`)."""
        return await in_thread(shared_lock(self), self.rerank_detailed, ranking, k)

    def rerank_batch(self, run: Run, k: int | None = None, progress: bool | None = None) -> Run:
        """Rerank every ranking of ``run``; a Run named ``<run>+<reranker>``.

        One :meth:`truncation_run`: :attr:`truncation` afterwards holds this run's cut documents, and one
        warning was logged if any was cut.

        ``progress`` (None: the process setting, :func:`attnsift.progress.is_enabled`) shows a counter
        over the queries on stderr.
        """
        from attnsift import progress as _progress

        items = _progress.bar(list(run.values()), desc=f"rerank ({self.name})", unit="queries", progress=progress)
        with self.truncation_run():
            return Run([self.rerank(r, k) for r in items], name=f"{run.name}+{self.name}")


class IdentityReranker(BaseReranker):
    """Keeps the first-stage order (the `--reranker none` baseline)."""

    name = "none"
    needs_text = False

    def score(self, ranking: Ranking) -> list[float]:
        return [c.score for c in ranking.candidates]
