"""The held-out queries a head analysis selects on, counted before any model runs.

Head selection (:mod:`attnsift.analysis.headsel`) needs at least :data:`MIN_HELDOUT_QUERIES` judged
queries whose first-stage list is full (``depth`` candidates; with ``all_lists``, any non-empty list).
Counting them needs only the first stage (BM25: seconds), so :func:`check_heldout` runs before the
model is loaded and says how many are needed, how many there are and what to change.
"""
from __future__ import annotations

from typing import Callable, Mapping

from attnsift.types import Run

__all__ = ["MIN_HELDOUT_QUERIES", "usable_queries", "check_heldout"]

#: fewer held-out queries than this give a head selection that is noise
MIN_HELDOUT_QUERIES = 5


def usable_queries(run: Run, qrels: Mapping[str, Mapping[str, int]], depth: int, all_lists: bool = False) -> list[str]:
    """The query ids of ``run`` (in its order) that a head analysis can select on.

    Parameters
    ----------
    run : Run
        The first stage's run (at least ``depth`` candidates asked per query).
    qrels : mapping
        ``{query_id: {doc_id: grade}}``; queries without judgements are not usable.
    depth : int
        Candidates per query the analysis reranks.
    all_lists : bool
        Count lists shorter than ``depth`` too (any non-empty list).
    """
    need = 1 if all_lists else depth
    return [q for q, rk in run.items() if qrels.get(q) and len(rk.top(depth)) >= need]


def check_heldout(run: Run, qrels: Mapping[str, Mapping[str, int]], depth: int, *, all_lists: bool = False,
                  where: str = "the held-out split", max_queries: int | None = None,
                  full_run: Run | Callable[[], Run] | None = None, minimum: int = MIN_HELDOUT_QUERIES,
                  first_stage: str = "BM25") -> list[str]:
    """Check there are enough usable held-out queries; returns their ids (``run`` order).

    Parameters
    ----------
    run : Run
        The first stage over the queries the analysis would use (after ``--max-queries``).
    qrels : mapping
        Judgements of the whole split (also those of ``full_run``'s queries).
    depth : int
        Candidates per query.
    all_lists : bool
        See :func:`usable_queries`.
    where : str
        The data set and split, for the message (``"nfcorpus dev"``).
    max_queries : int, optional
        The cut that produced ``run``'s queries; with ``full_run`` (the first stage over every query of
        the split, in order; or a function that makes it, called only when the check fails) the
        message says which ``--max-queries`` would be enough.
    minimum : int
        Queries needed.

    Raises
    ------
    ValueError
        One line: the figure needed, what is available (and of how many judged), and what to change.
    """
    picked = usable_queries(run, qrels, depth, all_lists)
    if len(picked) >= minimum:
        return picked
    judged = sum(1 for q in run if qrels.get(q))
    lists = "non-empty" if all_lists else f"{depth}"
    need = (f"analyze heads needs at least {minimum} held-out queries with {lists} {first_stage} candidates"
            + ("" if all_lists else " each"))
    cut = f" with --max-queries {max_queries}" if max_queries is not None else ""
    have = f"{where} has {len(picked)} (of {judged} judged){cut}"
    fixes: list[str] = []
    if callable(full_run):
        full_run = full_run()
    if max_queries is not None and full_run is not None:
        enough = _prefix_for(full_run, qrels, depth, all_lists, minimum)
        if enough is not None:
            fixes.append(f"raise --max-queries to >= {enough}")
    if not all_lists:
        if max_queries is None or not fixes:
            n_all = len(usable_queries(full_run or run, qrels, depth, all_lists=True))
            if n_all >= minimum:
                fixes.append(f"lower --depth or pass --all-lists ({n_all} queries have a non-empty list)")
        else:
            fixes.append("pass --all-lists")
    if not fixes:
        fixes.append("choose another --dataset or --split with more judged queries")
    raise ValueError(f"{need}; {have}: {' or '.join(fixes)}")


def _prefix_for(full_run: Run, qrels: Mapping[str, Mapping[str, int]], depth: int, all_lists: bool,
                minimum: int) -> int | None:
    """The smallest N whose first N queries hold ``minimum`` usable ones, or None if all do not."""
    usable = set(usable_queries(full_run, qrels, depth, all_lists))
    seen = 0
    for n, q in enumerate(full_run, 1):
        seen += q in usable
        if seen >= minimum:
            return n
    return None

