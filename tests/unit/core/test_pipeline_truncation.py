"""A pipeline run reports the documents its reranker cut once, when the run ends, with the whole run's
figures; one question through ``pipeline(query)`` is not a run."""
from __future__ import annotations

import logging

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import tiny_icr, toy_ranking  # noqa: E402

from attnsift import Pipeline, Query, Run  # noqa: E402


def _provided_run(n_queries: int) -> Run:
    base = toy_ranking(5)  # documents of 6..10 words
    return Run((type(base)(Query(f"q{i}", base.query.text), base.candidates) for i in range(n_queries)), name="toy")


def _cut_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "attnsift.rerank.truncation"]


def test_one_warning_per_run_with_the_whole_runs_figures(caplog):
    icr = tiny_icr(max_words=7)  # cuts d2, d3, d4 (8, 9, 10 words) of every query
    pipe = Pipeline(_provided_run(3), icr, first_stage_k=5)
    with caplog.at_level(logging.WARNING, logger="attnsift.rerank.truncation"):
        pipe.run(progress=False)
    lines = _cut_lines(caplog)
    assert len(lines) == 1, lines
    assert "cut 9 of 15 candidate documents to 7 words" in lines[0] and "10" in lines[0]
    assert icr.truncation["documents"] == 15 and icr.truncation["cut"] == 9 and icr.truncation["limit"] == 7
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnsift.rerank.truncation"):
        pipe.run(progress=False)  # a second run starts its own count and warns once again
    assert len(_cut_lines(caplog)) == 1 and icr.truncation["documents"] == 15


def test_single_questions_warn_once_not_per_call(caplog):
    from attnsift.types import Candidate, Document

    icr = tiny_icr(max_words=7)
    docs = [Document(f"d{i}", " ".join(["word"] * (6 + i))) for i in range(5)]

    class Fixed:  # a retriever that always returns the five documents
        name = "fixed"

        def retrieve_batch(self, queries, k=100):
            return Run((type(toy_ranking())(q, tuple(Candidate(d.id, 5.0 - i, d) for i, d in enumerate(docs)))
                        for q in queries), name="fixed")

        def retrieve(self, query, k=100):
            return self.retrieve_batch([query], k)[query.id]

    pipe = Pipeline(Fixed(), icr, first_stage_k=5)
    with caplog.at_level(logging.WARNING, logger="attnsift.rerank.truncation"):
        for _ in range(3):
            pipe("why do sailors get scurvy?")
    assert len(_cut_lines(caplog)) == 1, _cut_lines(caplog)
