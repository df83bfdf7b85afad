"""Head selection (issue 7): per-head scoring arithmetic, profiles in ICR, the offline analysis."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnsift.rerank.head_scoring import (HeadScorer, aggregate, fuse, head_values, read_profile, resample_prior,
                                          scorer_from_profile)


def test_head_values_variants():
    raw = np.array([[3.0, 1.0, 0.0]])
    na = np.array([[1.0, 1.0, 2.0]])
    np.testing.assert_allclose(head_values(raw, na, None, "cal"), [[2.0, 0.0, -2.0]])
    np.testing.assert_allclose(head_values(raw, na, None, "norm"), [[0.75 - 0.25, 0.25 - 0.25, 0.0 - 0.5]])
    np.testing.assert_allclose(head_values(raw, na, None, "prior", np.array([[0.5, 0.25, 0.25]])),
                               [[0.25, 0.0, -0.25]])
    with pytest.raises(ValueError, match="masked"):
        head_values(raw, na, None, "masked")
    with pytest.raises(ValueError, match="unknown head variant"):
        head_values(raw, na, None, "bogus")
    # The N/A mass alone is "na_mass" (calibration="na" is R - A); profiles saying "na" are still read.
    np.testing.assert_allclose(head_values(raw, na, None, "na_mass"), na)
    np.testing.assert_allclose(head_values(raw, na, None, "na"), na)
    assert HeadScorer([(0, 0)], "na").variant == "na_mass"


def test_aggregate_z_balances_scales():
    # Head 0 has a huge scale and prefers doc 0; heads 1 and 2 (small scale) prefer doc 2.
    v = np.array([[100.0, 0.0, 1.0], [0.0, 0.1, 0.2], [0.0, 0.1, 0.2]])
    assert int(np.argmax(aggregate(v, "sum"))) == 0
    assert int(np.argmax(aggregate(v, "z"))) == 2
    with pytest.raises(ValueError):
        aggregate(v, "max")


def test_fuse_interp_and_rrf():
    a, f = np.array([0.0, 1.0, 2.0]), np.array([30.0, 20.0, 10.0])
    np.testing.assert_allclose(fuse(a, f, 1.0), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(fuse(a, f, 0.0), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(fuse(a, f, 0.5, "rrf"), [0.5 / 63 + 0.5 / 61, 0.5 / 62 + 0.5 / 62, 0.5 / 61 + 0.5 / 63])
    with pytest.raises(ValueError, match="weight"):
        fuse(a, f, 1.5)


def test_resample_prior_keeps_shape_and_mass():
    p = np.array([[0.4, 0.3, 0.2, 0.1]])
    assert resample_prior(p, 4) is p or np.allclose(resample_prior(p, 4), p)
    q = resample_prior(p, 7)
    assert q.shape == (1, 7) and q.sum() == pytest.approx(1.0) and np.all(np.diff(q[0]) < 0)


def test_scorer_picks_heads_from_recorded_layers():
    raw = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    na = np.ones_like(raw)
    s = HeadScorer([(7, 2)], "cal", "sum")
    np.testing.assert_allclose(s.attention_scores(raw, na, None, layers=[5, 7]), raw[1, 2] - 1.0)
    with pytest.raises(ValueError, match="not recorded"):
        HeadScorer([(6, 0)], "cal").attention_scores(raw, na, None, layers=[5, 7])


def _profile(heads, variant="cal", how="sum", layers=2, nh=2, fusion=None):
    return {"format": "attnsift-head-profile", "version": 1, "model": "tiny", "num_layers": layers, "num_heads": nh,
            "selection": {"variant": variant, "aggregate": how, "k": len(heads), "heads": [list(h) for h in heads]},
            "fusion": fusion}


def test_profile_reading_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="analyze heads"):
        read_profile(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_profile(bad)
    bad.write_text(json.dumps({"selection": {}}))
    with pytest.raises(ValueError, match="not an attnsift head profile"):
        read_profile(bad)
    with pytest.raises(ValueError, match="does not fit"):
        scorer_from_profile(_profile([(0, 0)]), num_layers=30, num_heads=9)


# ------------------------------------------------------------------------------- ICR with a profile
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import tiny_icr as icr  # noqa: E402
from helpers import toy_ranking as ranking  # noqa: E402


def test_icr_with_a_profile_scores_the_selected_heads_and_exits_early(tmp_path: Path):
    full = icr(calibration="none").score_details(ranking())
    raw, na = full.head_raw.numpy().astype(float), full.head_na.numpy().astype(float)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_profile([(1, 0), (0, 1)], "cal", "sum", layers=3)))
    rr = icr(heads=str(p))
    assert rr.layers == [0, 1]  # layer 2 is never run
    got = rr.score(ranking())
    want = (raw[1, 0] - na[1, 0]) + (raw[0, 1] - na[0, 1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # A different head gives different scores: the check can fail.
    p.write_text(json.dumps(_profile([(2, 1)], "cal", "sum", layers=3)))
    other = icr(heads=str(p)).score(ranking())
    np.testing.assert_allclose(other, raw[2, 1] - na[2, 1], rtol=1e-5, atol=1e-7)
    assert not np.allclose(other, got)


def test_icr_profile_fusion_and_plain_fusion(tmp_path: Path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_profile([(1, 1)], "norm", "z", layers=3, fusion={"method": "interp", "weight": 0.0})))
    first = [c.score for c in ranking().candidates]
    # Weight 0: the first stage alone decides.
    out = icr(heads=str(p), fusion="profile").rerank(ranking())
    assert out.doc_ids == ranking().doc_ids
    attn = np.asarray(icr(heads=str(p)).score(ranking()))
    fused = icr(heads=str(p), fusion="rrf", fusion_weight=0.7).score(ranking())
    np.testing.assert_allclose(fused, fuse(attn, np.asarray(first), 0.7, "rrf"))
    plain = icr(calibration="na", fusion="interp", fusion_weight=0.25).score(ranking())
    base = np.asarray(icr(calibration="na").score(ranking()))
    np.testing.assert_allclose(plain, fuse(base, np.asarray(first), 0.25))


def test_icr_profile_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="no head profile ships"):
        icr(heads="auto")
    with pytest.raises(FileNotFoundError):
        icr(heads=str(tmp_path / "nope.json"))
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_profile([(0, 0)], layers=3)))
    with pytest.raises(ValueError, match="records no fusion"):
        icr(heads=str(p), fusion="profile")
    with pytest.raises(ValueError, match="fusion=profile"):
        icr(fusion="profile")
    with pytest.raises(ValueError, match="fusion_weight"):
        icr(fusion="interp", fusion_weight=2)
    p.write_text(json.dumps(_profile([(0, 5)], layers=3)))
    with pytest.raises(ValueError, match="outside this model"):
        icr(heads=str(p))
    with pytest.raises(ValueError, match="'auto', a .json head profile"):
        icr(heads="best")
    # A head profile sets each head's calibration: another calibration with it is a contradiction.
    p.write_text(json.dumps(_profile([(0, 0)], layers=3)))
    with pytest.raises(ValueError, match="calibration=none is not used with heads="):
        icr(heads=str(p), calibration="none")
    with pytest.raises(ValueError, match="fusion_weight=0.7 is not used with fusion=profile"):
        icr(heads=str(p), fusion="profile", fusion_weight=0.7)


@pytest.mark.parametrize("model,layers,heads", [("smollm2-135m", 30, 9), ("gemma3-270m", 18, 4)])
def test_packaged_profile_fits_its_model(model, layers, heads):
    from attnsift.rerank.head_scoring import packaged_profile

    prof = read_profile(packaged_profile(model))
    s = scorer_from_profile(prof, layers, heads)
    assert prof["model"] == model and prof["selected_on"]["split"] != "test"
    assert all(0 <= l < layers and 0 <= h < heads for l, h in s.heads)
    with pytest.raises(ValueError, match="does not fit"):
        scorer_from_profile(prof, layers + 1, heads)


def test_icr_two_orders_average_both_prompt_orders():
    from attnsift.rerank.head_scoring import aggregate

    a = np.asarray(icr(calibration="na").score(ranking()))
    b = np.asarray(icr(calibration="na", reverse=False).score(ranking()))
    assert not np.allclose(a, b)
    both = icr(calibration="na", orders=2).score(ranking())
    np.testing.assert_allclose(both, aggregate(np.stack([a, b]), "z"), rtol=1e-6)
    with pytest.raises(ValueError, match="orders"):
        icr(orders=3)


def test_profile_option_mismatch_names_options_and_the_document_cut():
    from types import SimpleNamespace

    from attnsift.rerank.head_scoring import profile_option_mismatch

    prof = {"selected_on": {"max_words": 100, "options": {"query_positions": "999"}}}
    cfg = SimpleNamespace(max_words=300, query_positions=999)
    assert profile_option_mismatch(prof, cfg) == {"max_words": ("100", "300")}
    assert profile_option_mismatch(prof, SimpleNamespace(max_words=100, query_positions=2)) == {
        "query_positions": ("999", "2")}
    assert profile_option_mismatch({"selected_on": {}}, cfg) == {}
