"""Pipeline progress on stderr: nothing when disabled, one line per long step when enabled, one time estimate."""
from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from attnsift import Candidate, Document, Pipeline, Query, Ranking, Run, progress
from attnsift.errors import AttnsiftDeprecationWarning
from attnsift.pipeline import first_stage
from attnsift.rerank.base import BaseReranker

DOCS = [Document(f"d{i}", f"apple {'pie ' * i}tree {i}") for i in range(6)]


class _Overlap:
    name = "overlap"

    def retrieve(self, query, k=100):
        words = set(query.text.split())
        return Ranking(query, tuple(Candidate(d.id, float(len(words & set(d.text.split())))) for d in DOCS)).top(k)

    def retrieve_batch(self, queries, k=100):
        return Run((self.retrieve(q, k) for q in queries), name=self.name)


class _Sleepy(BaseReranker):
    """Each query costs a known sleep; it says it runs on 'cpu' and has a max_words option."""

    name = "sleepy"
    device = "cpu"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.config = SimpleNamespace(max_words=300)

    def score(self, ranking):
        time.sleep(self.seconds)
        return [-float(i) for i in range(len(ranking))]


def _queries(n: int) -> list[Query]:
    return [Query(str(i), f"apple pie {i}") for i in range(n)]


def test_disabled_prints_nothing(pipe):
    stderr = pipe()
    pipeline = Pipeline(_Overlap(), _Sleepy(0.0), depth=3, corpus={d.id: d for d in DOCS})
    assert len(pipeline.run(_queries(3), progress=False)) == 3
    progress.configure(False)
    assert len(pipeline.run(_queries(3))) == 3  # None: the process setting
    progress.configure(None)
    assert len(pipeline.run(_queries(3))) == 3  # None, unconfigured: off when stderr is not a terminal
    assert stderr.getvalue() == ""


def test_enabled_prints_first_stage_and_rerank_lines(pipe):
    stderr = pipe()
    progress.configure(True)
    pipeline = Pipeline(_Overlap(), _Sleepy(0.0), depth=3, corpus={d.id: d for d in DOCS})
    assert len(pipeline.run(_queries(4))) == 4
    lines = stderr.getvalue().splitlines()
    assert lines[0] == "first stage (overlap): 4 queries ..."
    assert lines[1].startswith("first stage (overlap): 4 queries: done in ")
    assert lines[2] == "rerank (overlap+sleepy): 4 queries ..."
    assert lines[3].startswith("rerank (overlap+sleepy): 4/4 queries in ")
    assert len(lines) == 4  # a short run: no estimate
    stderr.truncate(0), stderr.seek(0)
    assert pipeline("apple pie").doc_ids  # one query (RAG use) prints nothing
    assert stderr.getvalue() == ""


def test_reading_texts_from_a_corpus_on_disk_is_a_step(pipe, tmp_path: Path):
    from attnsift.eval.datasets.base import Corpus

    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n" for d in DOCS))
    stderr = pipe()
    Pipeline(_Overlap(), _Sleepy(0.0), depth=2, corpus=Corpus.from_jsonl(path)).run(_queries(2), progress=True)
    assert re.search(r"^reading \d+ candidate texts from .*corpus.jsonl \.\.\.$", stderr.getvalue(), re.M)


def test_estimate_line_from_a_measured_sample(pipe):
    stderr = pipe()
    pipeline = Pipeline(_Overlap(), _Sleepy(0.25), depth=3, corpus={d.id: d for d in DOCS})
    stream = pipeline.stream(_queries(1000), progress=True)
    for _ in range(8):  # 8 x 0.25 s = 2 s: the sample is measured, 1000 queries project to about 4 minutes
        next(stream)
    stream.close()
    found = re.findall(r"^estimate: about ([\d.]+) min for 1000 queries \(([\d.]+) s per query measured on the "
                       r"first (\d+), device cpu\); fewer queries \(--max-queries\), a lower depth \(--depth, now 3\) "
                       r"or shorter documents \(--option max_words=, now 300\) shorten it$", stderr.getvalue(), re.M)
    assert len(found) == 1, stderr.getvalue()
    minutes, per, n = float(found[0][0]), float(found[0][1]), int(found[0][2])
    assert 3.5 <= minutes <= 8 and 0.2 <= per <= 0.5 and 1 <= n <= 8


def test_a_fast_run_gets_no_estimate(pipe):
    stderr = pipe()
    Pipeline(_Overlap(), _Sleepy(0.001), depth=3, corpus={d.id: d for d in DOCS}).run(_queries(30), progress=True)
    assert "estimate" not in stderr.getvalue()


def test_first_stage_model_keyword_is_deprecated_and_encoder_goes_to_the_registry():
    from attnsift.eval.datasets.base import Corpus

    ds = SimpleNamespace(name="toy", queries={}, runs={}, run_aliases={}, corpus=Corpus.from_documents(DOCS))
    assert first_stage(ds, "bm25").retrieve(Query("q", "apple pie"), k=2).doc_ids
    with pytest.raises(ValueError, match="takes no model"):  # BM25 has no encoder: it reached build_retriever
        first_stage(ds, "bm25", encoder="minilm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="takes no model"):
            first_stage(ds, "bm25", model="minilm")
    assert any(issubclass(w.category, AttnsiftDeprecationWarning) and "encoder=" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="give the encoder once"), pytest.warns(AttnsiftDeprecationWarning):
        first_stage(ds, "dense", encoder="minilm", model="minilm")


def test_rerank_batch_uses_the_progress_switch(pipe):
    stderr = pipe()
    run = Run([Ranking(q, tuple(Candidate(d.id, 1.0, d) for d in DOCS[:3])) for q in _queries(2)], name="r")
    assert len(_Sleepy(0.0).rerank_batch(run)) == 2
    assert stderr.getvalue() == ""
    assert len(_Sleepy(0.0).rerank_batch(run, progress=True)) == 2
    assert stderr.getvalue().splitlines()[0] == "rerank (sleepy): 2 queries ..."
