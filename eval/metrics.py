"""Retrieval metrics through ir_measures (pytrec_eval backend; RR@k through ir_measures' msmarco provider).

Metric names
------------
Users type short names; they map to ir_measures measures as follows (``L`` = ``rel_level``)::

    nDCG@k, nDCG        -> nDCG@k, nDCG            (graded labels as judged)
    MRR@k, RR@k, MRR, RR -> RR(rel=L)@k, RR(rel=L)
    R@k, Recall@k       -> R(rel=L)@k
    P@k                 -> P(rel=L)@k
    AP, MAP, AP@k       -> AP(rel=L), AP(rel=L)@k

Binary measures count a document relevant when its grade is at least ``rel_level``: 1 for most
collections, 2 for TREC DL (the TREC DL convention for RR, R and AP). Names are case-insensitive.

Which queries are evaluated
---------------------------
``queries=None``: the queries of the run that have judgements (what trec_eval does without ``-c``).
``queries`` given: exactly those; a query with judgements but no candidates scores 0 on every
metric (it is not silently dropped, unlike trec_eval). Queries without any judgements cannot be
scored: they are dropped and counted in ``report.metadata["dropped_no_qrels"]``.

Nothing to evaluate is an error, never a NaN: an empty run, an empty ``queries``, or queries none of
which has judgements raise ValueError (a mean over no queries is undefined, and NaN is not JSON).

Order
-----
For a :class:`~attnsift.types.Run`, each Ranking is evaluated in its own order: the scores handed to
pytrec_eval are derived from the rank (``n - i``), so pytrec_eval's tie-breaking (by doc id,
descending) can never reorder a ranking. Raw ``{qid: {docid: score}}`` mappings are passed as given.
"""
from __future__ import annotations

import re
import time
from typing import Any, Iterable, Mapping, Sequence

from attnsift.eval.report import EvalReport
from attnsift.types import Run

__all__ = ["evaluate", "parse_metric", "DEFAULT_METRICS"]

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "MRR@10", "R@100", "AP")

# lower-case family name -> (canonical display name, ir_measures family, binary?, cut-off allowed, cut-off required)
_FAMILIES: dict[str, tuple[str, str, bool, bool, bool]] = {
    "ndcg": ("nDCG", "nDCG", False, True, False),
    "mrr": ("MRR", "RR", True, True, False),
    "rr": ("RR", "RR", True, True, False),
    "r": ("R", "R", True, True, True),
    "recall": ("R", "R", True, True, True),
    "p": ("P", "P", True, True, True),
    "precision": ("P", "P", True, True, True),
    "ap": ("AP", "AP", True, True, False),
    "map": ("AP", "AP", True, True, False),
}

_ACCEPTED = "nDCG@k, nDCG, MRR@k (= RR@k), MRR, RR, R@k, P@k, AP (= MAP), AP@k (k a positive integer, e.g. nDCG@10)"

_NAME_RE = re.compile(r"^\s*([A-Za-z]+)\s*(?:@\s*(\d+))?\s*$")


def parse_metric(name: str, rel_level: int = 1) -> tuple[str, Any]:
    """Map a user metric name to ``(display_name, ir_measures measure)``.

    Raises
    ------
    ValueError
        For an unknown name, listing the accepted forms.
    """
    import ir_measures

    if not isinstance(name, str):
        raise TypeError(f"metric names are strings such as 'nDCG@10', got {name!r}")
    m = _NAME_RE.match(name)
    fam = _FAMILIES.get(m.group(1).lower()) if m else None
    if fam is None:
        raise ValueError(f"unknown metric {name!r}; accepted forms: {_ACCEPTED}")
    display, irm_name, binary, cut_ok, cut_required = fam
    cut = m.group(2)
    if cut is not None and int(cut) <= 0:
        raise ValueError(f"metric {name!r}: the cut-off must be a positive integer; accepted forms: {_ACCEPTED}")
    if cut is None and cut_required:
        raise ValueError(f"metric {name!r} needs a cut-off, e.g. {display}@100; accepted forms: {_ACCEPTED}")
    measure = getattr(ir_measures, irm_name)
    if binary:
        measure = measure(rel=rel_level)
    if cut is not None:
        measure = measure @ int(cut)
        display = f"{display}@{int(cut)}"
    return display, measure


def _rank_scores(run: Run) -> dict[str, dict[str, float]]:
    # Scores from ranks: strictly decreasing, so the evaluator sees exactly our order.
    out: dict[str, dict[str, float]] = {}
    for qid, ranking in run.items():
        n = len(ranking)
        out[qid] = {d: float(n - i) for i, d in enumerate(ranking.doc_ids)}  # ids only: no Candidate objects made
    return out


def evaluate(
    run: Run | Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    rel_level: int = 1,
    name: str | None = None,
    queries: Iterable[str] | None = None,
) -> EvalReport:
    """Evaluate a run against relevance judgements.

    Parameters
    ----------
    run : Run or mapping ``{query_id: {doc_id: score}}``
        The system output. A Run is evaluated in each Ranking's order (see module docstring).
    qrels : mapping ``{query_id: {doc_id: grade}}``
        Judgements (integer grades).
    metrics : sequence of str
        Metric names (see module docstring), reported in this order.
    rel_level : int
        Minimum grade counted relevant by binary measures (RR, R, P, AP); 2 for TREC DL.
    name : str, optional
        Report name; defaults to the Run's name, else ``"run"``.
    queries : iterable of str, optional
        Query ids to evaluate over (see module docstring). Default: run queries that have qrels.

    Returns
    -------
    EvalReport
        Per-query values and means; ``metadata`` holds ``rel_level``, the ir_measures measure strings,
        ``dropped_no_qrels``, ``zero_filled`` (queries with judgements but no candidates) and timing.

    Raises
    ------
    ValueError
        Bad metric names or ``rel_level``, or nothing to evaluate (no query with judgements).
    """
    import ir_measures

    t0 = time.perf_counter()
    if isinstance(rel_level, bool) or not isinstance(rel_level, int) or rel_level < 1:
        raise ValueError(f"rel_level must be a positive integer (1, or 2 for TREC DL), got {rel_level!r}")
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics:
        raise ValueError(f"give at least one metric; accepted forms: {_ACCEPTED}")
    parsed: list[tuple[str, Any]] = []
    for m in metrics:
        display, measure = parse_metric(m, rel_level)
        if any(display == d or str(measure) == str(other) for d, other in parsed):
            raise ValueError(f"metric {m!r} is listed twice (as {display} = {measure}); list each metric once")
        parsed.append((display, measure))

    if isinstance(run, Run):
        run_name = name or run.name
        run_dict = _rank_scores(run)
    elif isinstance(run, Mapping):
        run_name = name or "run"
        run_dict = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items()}
    else:
        raise TypeError(f"run must be a Run or a mapping {{qid: {{docid: score}}}}, got {type(run).__name__}")

    if queries is None:
        wanted = list(run_dict)
    else:
        if isinstance(queries, str):
            raise TypeError("queries must be an iterable of query ids, not a single string")
        wanted = list(dict.fromkeys(str(q) for q in queries))
    eval_qids = [q for q in wanted if q in qrels and len(qrels[q]) > 0]
    dropped = len(wanted) - len(eval_qids)
    if not eval_qids:
        source = f"run {run_name!r}" if queries is None else "the queries given"
        why = ("is empty: it ranks no query" if not wanted else
               f"names {len(wanted)} queries, none of which has judgements in the qrels ({len(qrels)} judged queries)")
        raise ValueError(f"nothing to evaluate: {source} {why}; is it a run for another data set or split?")
    qset = set(eval_qids)

    sub_qrels = {q: {d: int(g) for d, g in qrels[q].items()} for q in eval_qids}
    sub_run = {q: run_dict[q] for q in eval_qids if q in run_dict and run_dict[q]}
    per_query: dict[str, dict[str, float]] = {q: {} for q in eval_qids}
    by_measure = {str(measure): display for display, measure in parsed}
    if sub_run:
        measures = [measure for _, measure in parsed]
        # The default provider chain, not ir_measures.pytrec_eval directly: pytrec_eval has no cut-off
        # for reciprocal rank and, called directly, silently computes RR@10 as RR (found by the parity
        # test); ir_measures then routes RR@k to its msmarco provider and the rest to pytrec_eval.
        for res in ir_measures.iter_calc(measures, sub_qrels, sub_run):
            if res.query_id in qset:
                per_query[res.query_id][by_measure[str(res.measure)]] = float(res.value)
    zero_filled = sum(1 for q in eval_qids if q not in sub_run)
    for q in eval_qids:
        row = per_query[q]
        if q not in sub_run:
            row.clear()  # no candidates: nothing relevant found, whatever the backend reports
        # 0 for no candidates (or a measure the backend leaves out for this query).
        per_query[q] = {display: row.get(display, 0.0) for display, _ in parsed}
    n = len(eval_qids)
    aggregate = {display: sum(per_query[q][display] for q in eval_qids) / n for display, _ in parsed}
    metadata: dict[str, Any] = {
        "rel_level": rel_level,
        "measures": {display: str(measure) for display, measure in parsed},
        "dropped_no_qrels": dropped,
        "zero_filled": zero_filled,
        "eval_seconds": round(time.perf_counter() - t0, 4),
    }
    return EvalReport(
        name=run_name,
        metrics=[d for d, _ in parsed],
        aggregate=aggregate,
        per_query=per_query,
        num_queries=n,
        metadata=metadata,
    )
