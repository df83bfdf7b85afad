"""Per-head analysis (issue 7): stored masses, nDCG arithmetic against ir_measures, selection, figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnsift.analysis.heads import QueryFeatures, load_head_masses
from attnsift.analysis.headsel import (first_stage_as_run, first_stage_ndcg, judge, make_profile, ndcg10,
                                   plot_head_heatmap, plot_layer_curve, select, selection_run)
from attnsift.eval.metrics import evaluate


def synthetic(nq: int = 14, L: int = 3, H: int = 2, N: int = 8, seed: int = 0):
    """Head (2, 1) sees relevance; every head also carries a position prior; first stage is noisy."""
    rng = np.random.default_rng(seed)
    feats, qrels = [], {}
    prior = np.linspace(1.0, 0.2, N)  # first-stage position 0 gets the most mass
    for q in range(nq):
        rel = rng.integers(0, 3, size=N).astype(float)
        rel[rng.integers(0, N)] = 2.0
        docs = [f"q{q}d{i}" for i in range(N)]
        qrels[f"q{q}"] = {d: int(r) for d, r in zip(docs, rel)}
        qrels[f"q{q}"][f"q{q}-unretrieved"] = 1  # the ideal ranking counts judged documents outside the list
        raw = rng.uniform(0.5, 1.0, size=(L, H, N)) * prior
        raw[2, 1] = prior * (0.3 + rel) / 3
        na = raw * rng.uniform(0.9, 1.1, size=(L, H, N))
        na[2, 1] = prior / 3
        first = np.sort(rng.uniform(0, 10, size=N))[::-1]
        feats.append(QueryFeatures(f"q{q}", docs, first, raw.astype(np.float32), na.astype(np.float32),
                                   (raw - na).astype(np.float32)))
    return feats, qrels


def test_ndcg_matches_ir_measures_on_selection_runs():
    feats, qrels = synthetic()
    judged = judge(feats, qrels)
    run = selection_run(judged, [(2, 1), (0, 0)], "cal", "sum")
    rep = evaluate(run, qrels, ["nDCG@10"])
    per = []
    for j in judged:
        sc = {c.doc_id: c.score for c in run[j.f.qid].candidates}
        per.append(float(ndcg10(np.array([sc[d] for d in j.f.doc_ids]), j)))
    assert rep["nDCG@10"] == pytest.approx(np.mean(per), abs=1e-9)
    base = evaluate(first_stage_as_run(judged), qrels, ["nDCG@10"])
    assert base["nDCG@10"] == pytest.approx(first_stage_ndcg(judged), abs=1e-9)
    assert rep["nDCG@10"] != pytest.approx(base["nDCG@10"], abs=1e-3)


def test_selection_finds_the_relevance_head_and_beats_the_first_stage():
    feats, qrels = synthetic()
    judged = judge(feats, qrels)
    a = select(judged, k_grid=(1, 2, 3, 6), w_grid=(0.0, 0.5, 1.0))
    grid = np.asarray(a["per_head"]["cal"])
    assert np.unravel_index(grid.argmax(), grid.shape) == (2, 1)
    assert [2, 1] in a["selection"]["heads"]
    assert a["selection"]["heldout_ndcg"] > a["first_stage"] + 0.05
    assert a["fusion"]["heldout_ndcg"] >= a["selection"]["heldout_ndcg"] - 1e-12  # weight 1.0 is in the grid
    # The N/A query alone (pure position prior) ranks like the first stage here, not like relevance.
    assert np.asarray(a["per_head"]["na_mass"])[2, 1] < grid[2, 1]
    # Queries without judgements are left out.
    assert len(judge(feats, {"q0": qrels["q0"]})) == 1


def test_profile_and_figures(tmp_path: Path):
    feats, qrels = synthetic()
    a = select(judge(feats, qrels), k_grid=(1, 2), w_grid=(0.0, 1.0))
    prof = make_profile(a, "tiny", 3, 2, {"dataset": "synthetic", "split": "dev"})
    json.dumps(prof)  # serialisable
    from attnsift.rerank.head_scoring import scorer_from_profile

    s = scorer_from_profile(prof, 3, 2)
    assert s.heads == [tuple(h) for h in prof["selection"]["heads"]]
    for p in (plot_head_heatmap(prof, tmp_path / "h.png"), plot_layer_curve(prof, tmp_path / "l.png")):
        assert Path(p).stat().st_size > 1000


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_collect_round_trip_resume_and_settings_guard(tmp_path: Path):
    from helpers import tiny_icr as icr
    from helpers import toy_ranking as ranking

    from attnsift.analysis.heads import collect_head_masses
    from attnsift.types import Query, Ranking, Run

    r1 = ranking(4)
    r2 = Ranking(Query("q/2", "vitamin c"), r1.candidates[:3])
    run = Run([r1, r2])
    rr = icr(calibration="none")
    folder = collect_head_masses(rr, run, tmp_path / "f", top_k=3)
    feats = load_head_masses(folder, ["q1", "q/2"])
    assert [f.qid for f in feats] == ["q1", "q/2"]
    assert feats[0].raw.shape == (3, 2, 3) and feats[0].doc_ids == ["d0", "d1", "d2"]
    d = rr.score_details(r1.top(3))
    np.testing.assert_allclose(feats[0].raw, d.head_raw.numpy())
    np.testing.assert_allclose(feats[0].icr_masked, d.masked)
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    collect_head_masses(rr, run, folder, top_k=3)  # resumes: nothing recomputed
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")} == stamp
    with pytest.raises(ValueError, match="other settings"):
        collect_head_masses(rr, run, folder, top_k=2)
    with pytest.raises(ValueError, match="every layer and head"):
        collect_head_masses(icr(end_layer=0), run, tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="analyze heads"):
        load_head_masses(tmp_path / "empty")
