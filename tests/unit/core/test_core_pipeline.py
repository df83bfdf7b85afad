"""Pipeline: first stage (retriever or provided run) -> rerank the top depth -> cut to k; first-stage choice."""
from __future__ import annotations

from pathlib import Path

import pytest

from attnsift import Candidate, Document, Pipeline, Query, Ranking, Run
from attnsift.trec import write_run
from attnsift.pipeline import attach_texts, check_cuts, first_stage, provided_run
from attnsift.rerank.base import BaseReranker, Reranked

DOCS = [Document("a", "red apple"), Document("b", "green apple pie"), Document("c", "blue sky"),
        Document("d", "apple tree green")]


class _ListRetriever:
    """Word-overlap scores; candidates carry no text (as an index loaded without documents)."""

    name = "list"

    def __init__(self, docs):
        self.docs = docs

    def retrieve(self, query, k=100):
        words = set(query.text.lower().split())
        scored = [Candidate(d.id, float(len(words & set(d.text.lower().split())))) for d in self.docs]
        return Ranking(query, tuple(scored)).top(k)

    def retrieve_batch(self, queries, k=100):
        return Run((self.retrieve(q, k) for q in queries), name=self.name)


class _Reverse(BaseReranker):
    name = "reverse"

    def score(self, ranking):
        return [float(i) for i in range(len(ranking))]  # the last candidate gets the best score


class _Timed:
    """Reports a fixed compute time, as a reranker sharing one forward pass between systems does."""

    name = "timed"

    def rerank(self, ranking, k=None):
        return _Reverse().rerank(ranking, k)

    def rerank_detailed(self, ranking, k=None):
        return Reranked(self.rerank(ranking, k), 1.5)


class _Plain:
    """A reranker with rerank() only (no rerank_detailed): the pipeline times it."""

    name = "plain"
    needs_text = False

    def rerank(self, ranking, k=None):
        return ranking


class _Corpus(dict):
    """A corpus with subset(), counting the passes over it."""

    passes = 0

    def subset(self, ids):
        type(self).passes += 1
        return {i: self[i] for i in ids if i in self}


def test_retriever_rerank_depth_and_cut():
    corpus = {d.id: d for d in DOCS}
    pipe = Pipeline(_ListRetriever(DOCS), _Reverse(), first_stage_k=4, depth=3, k=3, corpus=corpus)
    # first stage: b (2: green apple), d (2: apple green), a (1), c (0); the top 3 reversed: a, d, b; c below
    top = pipe("green apple")
    assert top.doc_ids == ["a", "d", "b"]
    full = Pipeline(_ListRetriever(DOCS), _Reverse(), first_stage_k=4, depth=3, corpus=corpus)("green apple")
    assert full.doc_ids == ["a", "d", "b", "c"]  # k=None keeps everything; the tail stays below in first-stage order
    assert all(c.document is not None for c in full.top(3)) and full[3].document is None  # texts for the top depth only
    run = pipe.run([Query("1", "green apple"), Query("2", "blue")])
    assert list(run) == ["1", "2"] and all(len(r) == 3 for r in run.values())
    assert run.name == pipe.name == "list+reverse"
    assert Pipeline(_ListRetriever(DOCS)).run(["apple"]).name == "list"


def test_stream_reports_first_stage_and_rerank_seconds():
    corpus = {d.id: d for d in DOCS}
    results = list(Pipeline(_ListRetriever(DOCS), _Timed(), depth=2, corpus=corpus).stream([Query("1", "green apple")]))
    (res,) = results
    assert res.query == Query("1", "green apple")
    assert res.first_stage.doc_ids == ["b", "d", "a", "c"]
    assert res.ranking.doc_ids == ["d", "b", "a", "c"]
    assert res.rerank_seconds == 1.5 and res.first_stage_seconds >= 0
    assert res.seconds == res.first_stage_seconds + 1.5
    timed = next(Pipeline(_ListRetriever(DOCS), _Plain()).stream(["apple"]))
    assert timed.rerank_seconds >= 0 and timed.ranking.doc_ids == timed.first_stage.doc_ids


@pytest.mark.parametrize("kwargs, message", [
    (dict(first_stage_k=5, depth=10), r"depth \(10\) is larger than first_stage_k \(5\)"),
    (dict(first_stage_k=5, k=10), r"k \(10\) is larger than first_stage_k \(5\)"),
    (dict(depth=0), "positive integer"),
])
def test_contradictory_cuts_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pipeline(_ListRetriever(DOCS), _Reverse(), **kwargs)


def test_bad_components_are_type_errors():
    with pytest.raises(ValueError, match="no reranker"):
        Pipeline(_ListRetriever(DOCS), depth=3)
    with pytest.raises(TypeError, match="Retriever"):
        Pipeline(object())
    with pytest.raises(TypeError, match="rerank"):
        Pipeline(_ListRetriever(DOCS), object())
    with pytest.raises(TypeError, match="corpus"):
        Pipeline(_ListRetriever(DOCS), corpus=[1, 2])
    with pytest.raises(TypeError, match="many queries"):
        Pipeline(_ListRetriever(DOCS)).run("apple")
    with pytest.raises(TypeError, match="needs the queries"):
        Pipeline(_ListRetriever(DOCS)).run()
    assert check_cuts(10, None, 5) == (10, 10, 5)
    assert check_cuts(10, None, None, reranked=False) == (10, None, None)


def _provided() -> Run:
    # as read from a file: query ids only
    return Run([Ranking(Query("q1"), tuple(Candidate(d, s) for d, s in (("a", 3.0), ("b", 2.0), ("c", 1.0)))),
                Ranking(Query("q9"), (Candidate("a", 1.0),))], name="bm25_flat")


def test_provided_run_stands_in_for_the_first_stage():
    queries = {"q1": Query("q1", "green apple"), "q2": Query("q2", "blue sky")}
    _Corpus.passes = 0
    corpus = _Corpus({d.id: d for d in DOCS})
    pipe = Pipeline(_provided(), _Reverse(), first_stage_k=2, corpus=corpus)
    run = pipe.run(queries)
    assert pipe.name == run.name == "bm25_flat+reverse"
    assert list(run) == ["q1", "q2"]
    assert run["q1"].query.text == "green apple"  # the text comes from the given queries
    assert run["q1"].doc_ids == ["b", "a"]  # cut to first_stage_k, then reranked
    assert len(run["q2"]) == 0  # not in the run: an empty ranking
    assert _Corpus.passes == 1  # one pass over the corpus for the whole run
    assert pipe(queries["q1"]).doc_ids == ["b", "a"]
    with pytest.raises(TypeError, match="Query whose id"):
        pipe("green apple")


def test_run_without_query_text_cannot_be_reranked_but_evaluates():
    with pytest.raises(ValueError, match="run 'bm25_flat' has no query text for 'q1'.*--dataset"):
        Pipeline(_provided(), _Reverse(), corpus={d.id: d for d in DOCS}).run()
    run = Pipeline(_provided(), first_stage_k=2).run()  # no reranker: ids are enough
    assert run.to_dict() == {"q1": {"a": 3.0, "b": 2.0}, "q9": {"a": 1.0}}
    with pytest.raises(ValueError, match="no query text"):
        Pipeline(_ListRetriever(DOCS)).run([Query("q1")])


def test_attach_texts_top_depth_only_and_foreign_documents():
    run = _provided()
    out = attach_texts(run, {d.id: d for d in DOCS}, depth=2)
    assert [c.document is not None for c in out["q1"]] == [True, True, False]
    assert out["q1"].doc_ids == run["q1"].doc_ids and out.name == run.name
    assert attach_texts(out, {}, depth=2) is out  # nothing to read
    with pytest.raises(ValueError, match=r"1 candidate documents of run 'bm25_flat' \(e.g. \['c'\]\).*does not belong"):
        attach_texts(run, {d.id: d for d in DOCS if d.id != "c"})


class _Dataset:
    name = "toy"

    def __init__(self, runs=None):
        self.queries = {"q1": Query("q1", "green apple"), "q2": Query("q2", "blue sky")}
        self.runs = dict(runs or {})
        self.run_aliases = {"bm25": "bm25_flat"} if "bm25_flat" in self.runs else {}
        self.corpus = _Corpus({d.id: d for d in DOCS})
        self.corpus.iter_documents = lambda: iter(DOCS)

    def load_run(self, name):
        key = self.run_aliases.get(name, name)
        if key not in self.runs:
            raise ValueError(f"data set 'toy' has no provided run {name!r}")
        return self.runs[key]


def test_first_stage_rule_provided_run_stands_in(tmp_path: Path):
    ds = _Dataset({"bm25_flat": _provided()})
    assert first_stage(ds, "bm25").name == "bm25_flat"  # the data set's bm25 run, not BM25 over its pool
    assert provided_run(ds, "dense") is None
    with pytest.raises(ValueError, match="takes no encoder, index or options .*k1"):
        first_stage(ds, "bm25", options={"k1": "1.2"})
    with pytest.raises(ValueError, match="no provided run 'splade'"):
        provided_run(ds, run="splade")
    path = tmp_path / "mine.trec"
    write_run(Run([Ranking(Query("q2"), (Candidate("c", 1.0),))]), path)
    from_file = provided_run(ds, run=path)
    assert from_file.name == "mine" and from_file["q2"].query.text is None
    write_run(Run([Ranking(Query("other"), (Candidate("c", 1.0),))]), path)
    with pytest.raises(ValueError, match="ranks none of the 2 queries of toy"):
        provided_run(ds, run=path)


def test_first_stage_builds_the_retriever_without_a_provided_run():
    ds = _Dataset()
    stage = first_stage(ds, "bm25")
    assert not isinstance(stage, Run)
    run = Pipeline(stage, first_stage_k=2).run(ds.queries)
    assert run["q1"].doc_ids[0] in {"b", "d"} and len(run["q2"]) >= 1


class _SubsettableDataset(_Dataset):
    split = "test"

    def subset(self, query_ids=None, *, max_queries=None):
        keep = list(self.queries)[:max_queries] if max_queries is not None else [q for q in self.queries if q in set(query_ids)]
        out = _SubsettableDataset(self.runs)
        out.queries = {q: self.queries[q] for q in keep}
        return out


def test_restrict_to_run_covers_warns_and_selects():
    from attnsift.pipeline import restrict_to_run

    ds = _SubsettableDataset()
    ds.queries = {**ds.queries, "q3": Query("q3", "red car")}
    partial = Run([Ranking(Query("q3"), (Candidate("c", 1.0),)), Ranking(Query("zz"), (Candidate("c", 1.0),))], name="p")
    warned = []
    sub = restrict_to_run(ds, partial, warn=warned.append)
    assert list(sub.queries) == ["q3"]
    assert warned == ["run 'p' covers 1 of the 3 queries of toy (test); 2 have no ranking; it also ranks 1 queries "
                      "the data set does not have (ignored); evaluating the 1 covered queries only"]
    with pytest.raises(ValueError, match="covers 1 of the 3 queries .*without --strict"):
        restrict_to_run(ds, partial, strict=True)
    full = Run([Ranking(Query(q), (Candidate("c", 1.0),)) for q in ("q3", "q2", "q1")], name="f")
    assert restrict_to_run(ds, full) is ds
    assert list(restrict_to_run(ds, full, max_queries=2).queries) == ["q1", "q2"]  # data set order, not run order
    with pytest.raises(ValueError, match="run 'e' is empty"):
        restrict_to_run(ds, Run([], name="e"))
    with pytest.raises(ValueError, match="max_queries must be"):
        restrict_to_run(ds, full, max_queries=0)
