"""EvalReport rendering, JSON, paired comparison (checked against scipy on the raw arrays)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from attnsift.eval.report import EvalReport, paired_ttest, render_rich_table, render_table


def _report(name: str, values: dict[str, list[float]], qids: list[str]) -> EvalReport:
    per_query = {q: {m: v[i] for m, v in values.items()} for i, q in enumerate(qids)}
    agg = {m: float(np.mean(v)) for m, v in values.items()}
    return EvalReport(name, list(values), agg, per_query, len(qids), {"dataset": "toy"})


rng = np.random.default_rng(0)
QIDS = [f"q{i}" for i in range(30)]
A = rng.uniform(0, 1, 30)
B = np.clip(A + rng.normal(0.15, 0.1, 30), 0, 1)  # clearly better
C = np.clip(A + rng.normal(0.0, 0.2, 30), 0, 1)   # noise


def test_compare_matches_scipy_and_direction():
    a = _report("a", {"nDCG@10": list(A), "AP": list(A)}, QIDS)
    b = _report("b", {"nDCG@10": list(B), "AP": list(A)}, QIDS)
    comp = a.compare(b)
    row = comp["nDCG@10"]
    ref = stats.ttest_rel(B, A)
    assert row.diff == pytest.approx(B.mean() - A.mean())  # b - a
    assert row.mean_a == pytest.approx(A.mean()) and row.mean_b == pytest.approx(B.mean())
    assert row.t == pytest.approx(ref.statistic) and row.p == pytest.approx(ref.pvalue)
    assert row.n == 30 and row.significant
    # identical values: zero variance -> p = 1
    assert comp["AP"].p == 1.0 and comp["AP"].t == 0.0 and not comp["AP"].significant
    d = comp.to_dict()
    assert d["metrics"]["nDCG@10"]["p"] == pytest.approx(ref.pvalue)
    assert "diff (b-a)" in str(comp) and "†" in comp.to_markdown()
    assert comp.to_rich_table().row_count == 2


def test_compare_uses_common_queries_only():
    a = _report("a", {"RR": list(A)}, QIDS)
    b = _report("b", {"RR": list(B[:20])}, QIDS[:20])
    comp = a.compare(b)
    ref = stats.ttest_rel(B[:20], A[:20])
    assert comp.common_queries == 20 and comp.only_a == 10 and comp.only_b == 0
    assert comp["RR"].p == pytest.approx(ref.pvalue)
    assert comp["RR"].mean_a == pytest.approx(A[:20].mean())


def test_paired_ttest_edge_cases():
    assert paired_ttest([0.1, 0.2], [0.3, 0.4]) == (float("inf"), 0.0)  # constant shift
    t, p = paired_ttest([0.5], [0.7])
    assert np.isnan(t) and np.isnan(p)
    with pytest.raises(ValueError, match="equally long"):
        paired_ttest([1.0], [1.0, 2.0])


def test_compare_rejects_disjoint_metrics():
    with pytest.raises(ValueError, match="share no metric"):
        _report("a", {"RR": list(A)}, QIDS).compare(_report("b", {"AP": list(A)}, QIDS))


def test_render_table_marks_significant_rows():
    a = _report("bm25", {"nDCG@10": list(A)}, QIDS)
    b = _report("better", {"nDCG@10": list(B)}, QIDS)
    c = _report("noise", {"nDCG@10": list(C)}, QIDS)
    p_c = stats.ttest_rel(C, A).pvalue
    text = render_table([a, b, c])
    lines = text.splitlines()
    assert lines[0].split() == ["system", "nDCG@10"]
    assert "bm25 (baseline)" in lines[2] and "†" not in lines[2]
    assert f"{B.mean():.4f}†" in lines[3]
    assert (f"{C.mean():.4f}†" in lines[4]) == (p_c < 0.05)
    md = render_table([a, b, c], markdown=True)
    assert md.startswith("| system | nDCG@10 |") and f"| better | {B.mean():.4f}† |" in md
    assert "†" not in render_table([a, b], baseline=None)
    assert render_rich_table([a, b]).row_count == 2
    with pytest.raises(ValueError, match="baseline"):
        render_table([a], baseline=3)


def test_report_serialisation(tmp_path):
    rep = _report("sys", {"nDCG@10": list(A), "AP": list(C)}, QIDS)
    path = tmp_path / "r" / "report.json"
    text = rep.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text)
    back = EvalReport.from_dict(json.loads(text))
    assert back.per_query == rep.per_query and back.aggregate == rep.aggregate and back.metrics == ["nDCG@10", "AP"]
    assert f"{A.mean():.4f}" in str(rep) and f"| sys | {A.mean():.4f} | {C.mean():.4f} |" in rep.to_markdown()
    assert rep["AP"] == pytest.approx(C.mean())
    with pytest.raises(KeyError, match="not in this report"):
        rep["P@5"]


def test_comparison_json_has_no_nan_or_infinity():
    one = _report("a", {"nDCG@10": [0.5]}, ["q1"]).compare(_report("b", {"nDCG@10": [0.7]}, ["q1"]))
    d = one.to_dict()
    json.dumps(d, allow_nan=False)  # raises on NaN / inf
    assert d["metrics"]["nDCG@10"]["t"] is None and d["metrics"]["nDCG@10"]["p"] is None
    assert "at least 2 common queries, there are 1" in d["t_test"]
    const = _report("a", {"AP": [0.1, 0.2]}, ["q1", "q2"]).compare(_report("b", {"AP": [0.3, 0.4]}, ["q1", "q2"]))
    row = json.loads(json.dumps(const.to_dict(), allow_nan=False))["metrics"]["AP"]
    assert row["t"] is None and row["p"] == 0.0 and "+infinite" in row["t_note"]


def test_compare_without_common_queries_is_an_error():
    a, b = _report("a", {"AP": [0.1]}, ["q1"]), _report("b", {"AP": [0.3]}, ["q2"])
    with pytest.raises(ValueError, match="share no query"):
        a.compare(b)
