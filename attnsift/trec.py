"""TREC run and qrels files: streaming readers and atomic writers.

Formats
-------
Run (one line per retrieved document)::

    qid Q0 docid rank score tag

Qrels, either TREC (``qid 0 docid rel``) or BEIR tsv (an optional header ``query-id corpus-id score``,
then ``qid<TAB>docid<TAB>rel``). Fields are whitespace-separated; ids never hold whitespace.

Every malformed line, and every byte that is not UTF-8, raises :class:`~attnsift.errors.DataFormatError`
naming the file and the line number, so a broken file is fixed at the right place rather than silently
half-read.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator, Mapping

from attnsift.errors import DataFormatError
from attnsift.io import atomic_file, utf8_lines
from attnsift.types import Candidate, Query, Ranking, Run

__all__ = ["read_run", "write_run", "read_qrels", "write_qrels", "iter_run_lines"]

logger = logging.getLogger(__name__)


def _open_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped_line)`` for non-empty, non-comment lines (1-based numbers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist; check the path")
    for lineno, text in utf8_lines(path, what):
        line = text.strip()
        if not line or line.startswith("#"):
            continue
        yield lineno, line


def iter_run_lines(path: str | Path) -> Iterator[tuple[int, str, str, int, float, str]]:
    """Stream a TREC run: ``(line_number, qid, docid, rank, score, tag)`` per line.

    Raises
    ------
    DataFormatError
        A line without 6 fields, a rank that is not an integer or a score that is not a finite-or-inf
        number (NaN is rejected).
    """
    for lineno, line in _open_lines(path, "run"):
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(
                f"{path}:{lineno}: a TREC run line needs 6 whitespace-separated fields "
                f"'qid Q0 docid rank score tag', got {len(parts)}: {line[:200]!r}"
            )
        qid, _q0, docid, rank_s, score_s, tag = parts
        try:
            rank = int(rank_s)
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: rank must be an integer, got {rank_s!r}") from None
        try:
            score = float(score_s)
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: score must be a number, got {score_s!r}") from None
        if math.isnan(score):
            raise DataFormatError(f"{path}:{lineno}: score is NaN; the system that wrote this run produced an invalid score")
        yield lineno, qid, docid, rank, score, tag


def read_run(
    path: str | Path,
    queries: Mapping[str, Query] | None = None,
    name: str | None = None,
    skip_unknown: bool = False,
) -> Run:
    """Read a TREC run file into a :class:`~attnsift.types.Run`.

    Candidates are ordered by score (descending, ties by doc id, as every Ranking is); the file's rank
    column is checked for form but not used, the same as trec_eval.

    Parameters
    ----------
    path : str or Path
        The run file.
    queries : mapping of query id to Query, optional
        Attaches the real query texts. A query id in the file that is not in ``queries`` is an error
        (a run for another data set or split) unless ``skip_unknown``. ``None``: the queries carry only
        their ids (``Query.text`` is None), enough to evaluate the run but not to rerank it.
    name : str, optional
        Run name; defaults to the tag of the first line (or the file name for an empty file).
    skip_unknown : bool
        Drop lines whose query id is not in ``queries`` (used when evaluating a subset of queries).

    Returns
    -------
    Run
        Queries in the order they first appear in the file.

    Raises
    ------
    DataFormatError
        Malformed lines, a document listed twice for a query, or an unknown query id.
    """
    path = Path(path)
    per_query: dict[str, list[Candidate]] = {}
    seen: dict[str, dict[str, int]] = {}
    first_tag: str | None = None
    skipped: set[str] = set()
    for lineno, qid, docid, _rank, score, tag in iter_run_lines(path):
        if first_tag is None:
            first_tag = tag
        if queries is not None and qid not in queries:
            if skip_unknown:
                skipped.add(qid)
                continue
            raise DataFormatError(
                f"{path}:{lineno}: query id {qid!r} is not one of the {len(queries)} queries given "
                "(is this run for another data set or split?); pass the matching queries, or skip_unknown=True"
            )
        docs = seen.setdefault(qid, {})
        if docid in docs:
            raise DataFormatError(
                f"{path}:{lineno}: document {docid!r} is listed twice for query {qid!r} "
                f"(first at line {docs[docid]}); deduplicate the run"
            )
        docs[docid] = lineno
        try:
            cand = Candidate(docid, score)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{path}:{lineno}: {exc}") from None
        per_query.setdefault(qid, []).append(cand)
    if skipped:
        logger.info("%s: skipped %d query ids not in the given queries", path, len(skipped))
    rankings = []
    for qid, cands in per_query.items():
        try:
            q = queries[qid] if queries is not None else Query(qid)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{path}: query id {qid!r}: {exc}") from None
        rankings.append(Ranking(q, tuple(cands)))
    return Run(rankings, name=name or first_tag or path.name)


def _check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be a non-empty string without whitespace, got {tag!r}")
    return tag


def write_run(run: Run | Mapping[str, Ranking], path: str | Path, tag: str | None = None) -> Path:
    """Write a run in TREC format, atomically (a failed write leaves no file under ``path``).

    ``tag`` (the last column) defaults to the run's name (``"attnsift"`` for a plain mapping).

    Ranks are 1..n in each Ranking's order; scores are written with full precision (``repr``) so a
    read-back gives the same floats and the same order.

    Returns
    -------
    Path
        ``path``.
    """
    tag = _check_tag(tag if tag is not None else getattr(run, "name", None) or "attnsift")
    path = Path(path)
    with atomic_file(path, "w") as fh:
        for qid, ranking in run.items():
            if not isinstance(ranking, Ranking):
                raise TypeError(f"write_run needs Ranking values, got {type(ranking).__name__} for query {qid!r}")
            for rank, cand in enumerate(ranking.candidates, start=1):
                fh.write(f"{qid} Q0 {cand.doc_id} {rank} {cand.score!r} {tag}\n")
    return path


def _parse_grade(value: str, path: Path, lineno: int) -> int:
    try:
        f = float(value)
    except ValueError:
        raise DataFormatError(f"{path}:{lineno}: relevance grade must be an integer, got {value!r}") from None
    if not f.is_integer():
        raise DataFormatError(f"{path}:{lineno}: relevance grade must be an integer, got {value!r}")
    return int(f)


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read relevance judgements: ``{query_id: {doc_id: grade}}`` (query order as in the file).

    Accepts TREC qrels (``qid iter docid rel``, 4 fields) and BEIR tsv (``qid docid rel``, 3 fields,
    optionally after a header line such as ``query-id corpus-id score``).

    Raises
    ------
    DataFormatError
        A line with another number of fields, a grade that is not an integer, or the same
        (query, document) pair judged twice with different grades.
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for lineno, line in _open_lines(path, "qrels"):
        parts = line.split()
        if first:
            first = False
            # BEIR header: 3 fields whose last one is not a number.
            if len(parts) == 3:
                try:
                    float(parts[2])
                except ValueError:
                    continue
        if len(parts) == 4:
            qid, _it, docid, grade_s = parts
        elif len(parts) == 3:
            qid, docid, grade_s = parts
        else:
            raise DataFormatError(
                f"{path}:{lineno}: a qrels line needs 4 fields 'qid 0 docid rel' (TREC) or 3 'qid docid rel' "
                f"(BEIR tsv), got {len(parts)}: {line[:200]!r}"
            )
        grade = _parse_grade(grade_s, path, lineno)
        docs = qrels.setdefault(qid, {})
        if docid in docs and docs[docid] != grade:
            raise DataFormatError(
                f"{path}:{lineno}: query {qid!r} document {docid!r} is judged twice with different grades "
                f"({docs[docid]} and {grade}); keep one judgement"
            )
        docs[docid] = grade
    return qrels


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | Path, format: str = "trec") -> Path:
    """Write qrels atomically, as TREC (``qid 0 docid rel``) or BEIR tsv (``format="beir"``, with header)."""
    if format not in ("trec", "beir"):
        raise ValueError(f"qrels format must be 'trec' or 'beir', got {format!r}")
    path = Path(path)
    with atomic_file(path, "w") as fh:
        if format == "beir":
            fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                if isinstance(grade, bool) or not isinstance(grade, int):
                    raise TypeError(f"qrels grade must be an int, got {grade!r} for ({qid!r}, {docid!r})")
                if format == "beir":
                    fh.write(f"{qid}\t{docid}\t{grade}\n")
                else:
                    fh.write(f"{qid} 0 {docid} {grade}\n")
    return path
