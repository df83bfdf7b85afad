"""What the three framework examples share: a few SciFact abstracts, one SciFact claim, the command line
and the printout. Not an example itself (the examples import it from their own folder)."""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

#: SciFact test claim 36; its one judged-relevant abstract (5152028) is BM25's 8th candidate among the first
#: 1,000 abstracts, so the reranker has something to do
QUERY = "A deficiency of vitamin B12 increases blood levels of homocysteine."
RELEVANT = {"5152028"}


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--model`` (the ICR model: a shipped name or a folder), ``--query``, ``--docs``, ``--candidates``,
    ``--top``, ``--max-words`` (small defaults: the example runs in under a minute on a laptop CPU)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="smollm2-135m", help="ICR's language model (shipped name or folder) [smollm2-135m]")
    p.add_argument("--query", default=QUERY, help="what to search for [SciFact claim 36]")
    p.add_argument("--docs", type=int, default=1000, help="how many SciFact abstracts to index [1000]")
    p.add_argument("--candidates", type=int, default=8, help="BM25 candidates handed to the reranker [8]")
    p.add_argument("--top", type=int, default=3, help="how many reranked documents to print [3]")
    p.add_argument("--max-words", type=int, default=60, help="words of each abstract the reranker reads [60]")
    return p.parse_args(argv)


def scifact_documents(n: int) -> list[Any]:
    """The first ``n`` SciFact abstracts (attnsift Documents) from ``$ATTNSIFT_DATA/scifact``."""
    from attnsift.documents import iter_documents

    root = os.environ.get("ATTNSIFT_DATA")
    corpus = Path(root or "") / "scifact" / "corpus.jsonl"
    if not root or not corpus.is_file():
        sys.exit(f"this example reads SciFact: set ATTNSIFT_DATA to the folder holding scifact/corpus.jsonl "
                 f"(now {root!r})")
    return list(itertools.islice(iter_documents(corpus), n))


def show(framework: str, query: str, rows: Iterable[tuple[str, float, int, str]]) -> None:
    """Print one line per reranked document: ``rank. id  score  first-stage rank  title``."""
    print(f"{framework}: {query}")
    for i, (doc_id, score, first_rank, title) in enumerate(rows, 1):
        mark = "  (judged relevant)" if doc_id in RELEVANT else ""
        print(f"{i}. {doc_id}  score={score:.6f}  first_stage_rank={first_rank}  {title[:60]}{mark}")
