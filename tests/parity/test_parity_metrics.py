"""evaluate() against pytrec_eval called directly, and DL19 published figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from attnsift.eval.datasets import load_dataset
from attnsift.eval.metrics import evaluate
from attnsift.trec import read_qrels, read_run


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(25):
        qid = f"q{q}"
        docs = [f"d{i}" for i in rng.choice(200, size=60, replace=False)]
        qrels[qid] = {d: int(rng.integers(0, 4)) for d in docs[:30]}
        qrels[qid][docs[0]] = 3  # at least one highly relevant document
        # distinct scores, so no tie-breaking difference between a Run and the raw scores
        run[qid] = {d: float(s) for d, s in zip(docs[10:], rng.permutation(50) + rng.uniform(0, 0.5, 50))}
    return qrels, run


@pytest.mark.parametrize("rel_level", [1, 2])
def test_matches_pytrec_eval_directly(rel_level):
    qrels, run = _random_case(rel_level)
    ours = evaluate(run, qrels, metrics=["nDCG@10", "nDCG", "MRR@10", "R@20", "P@5", "AP"], rel_level=rel_level)
    graded = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "ndcg"})
    binary = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", "recall.20", "P.5", "map"}, relevance_level=rel_level)
    g, b = graded.evaluate(run), binary.evaluate(run)

    # RR@10 is not a trec_eval measure: reference from the binary labels by hand
    def rr10(qid):
        ranked = sorted(run[qid], key=lambda d: -run[qid][d])[:10]
        return next((1.0 / (i + 1) for i, d in enumerate(ranked) if qrels[qid].get(d, 0) >= rel_level), 0.0)

    for qid in qrels:
        pq = ours.per_query[qid]
        assert pq["nDCG@10"] == pytest.approx(g[qid]["ndcg_cut_10"])
        assert pq["nDCG"] == pytest.approx(g[qid]["ndcg"])
        assert pq["R@20"] == pytest.approx(b[qid]["recall_20"])
        assert pq["P@5"] == pytest.approx(b[qid]["P_5"])
        assert pq["AP"] == pytest.approx(b[qid]["map"])
        assert pq["MRR@10"] == pytest.approx(rr10(qid))
    assert ours.aggregate["AP"] == pytest.approx(np.mean([b[q]["map"] for q in qrels]))
    assert ours.num_queries == 25


def test_run_object_matches_raw_scores_without_ties():
    qrels, run = _random_case(7)
    from attnsift.types import Run

    a = evaluate(Run.from_dict(run), qrels, rel_level=2)
    b = evaluate(run, qrels, rel_level=2)
    for m in a.metrics:
        assert a.aggregate[m] == pytest.approx(b.aggregate[m])


@pytest.fixture(scope="module")
def dl19(data_dir: Path) -> Path:
    p = data_dir / "trec-dl19-passage"
    if not (p / "runs" / "bm25_flat.top100.trec").is_file():
        pytest.skip(f"{p} with runs/*.trec is absent: see ../shared/data/README.md")
    return p


@pytest.mark.parametrize("run_file, ndcg10, r100", [("bm25_flat", 0.5058, 0.4910), ("splade_pp_ed", 0.7308, None)])
def test_dl19_published_figures(dl19, run_file, ndcg10, r100):
    qrels = read_qrels(dl19 / "qrels" / "test.tsv")
    run = read_run(dl19 / "runs" / f"{run_file}.top100.trec")
    rep = evaluate(run, qrels, metrics=["nDCG@10", "R@100"], rel_level=2)
    assert rep.num_queries == 43
    assert round(rep.aggregate["nDCG@10"], 4) == ndcg10
    if r100 is not None:
        assert round(rep.aggregate["R@100"], 4) == r100
    assert rep.metadata["measures"]["R@100"] == "R(rel=2)@100"


def test_dl19_through_load_dataset(dl19):
    ds = load_dataset(str(dl19))
    assert ds.rel_level == 2  # trec-dl folder name
    bm25 = evaluate(ds.load_run("bm25_flat"), ds.qrels, metrics=["nDCG@10"], rel_level=ds.rel_level)
    splade = evaluate(ds.load_run("splade_pp_ed"), ds.qrels, metrics=["nDCG@10"], rel_level=ds.rel_level)
    comp = bm25.compare(splade)
    assert round(comp["nDCG@10"].diff, 4) == round(0.7308 - 0.5058, 4)
    assert comp["nDCG@10"].significant
