"""benchmarks/compare_profiles.py: comparing head profiles chosen on the same held-out queries."""
import json

import numpy as np
import pytest
from helpers import load_benchmark


def _profile(seed: int, model: str = "m", shape=(3, 4), first_stage: float = 0.3) -> dict:
    rng = np.random.default_rng(seed)
    maps = {v: rng.uniform(0.1, 0.4, size=shape).tolist() for v in ("raw", "cal", "masked", "norm")}
    return {"format": "attnsift-head-profile", "reranker": "icr", "model": model, "queries": 10,
            "first_stage": first_stage, "per_head": maps,
            "per_layer": {v: np.asarray(m).mean(axis=1).tolist() for v, m in maps.items()},
            "all_heads": {"raw": 0.29, "cal": 0.30, "masked": 0.31, "norm": 0.28},
            "selection": {"variant": "cal", "aggregate": "sum", "k": 2, "heads": [[0, 1], [2, 3]],
                          "heldout_ndcg": 0.33},
            "selected_on": {"dataset": "nfcorpus", "split": "dev", "max_words": 100}}


def test_similarity_is_one_for_the_same_map_and_lower_for_another():
    bench = load_benchmark("compare_profiles")
    a, b = _profile(0), _profile(1)
    same = bench.similarity(a, a)["masked"]
    assert same["pearson"] == pytest.approx(1.0) and same["mean_abs_diff"] == 0.0
    other = bench.similarity(a, b)["masked"]
    assert other["pearson"] < 0.9 and other["mean_abs_diff"] > 0.01


def test_summary_finds_the_best_head_and_layer():
    bench = load_benchmark("compare_profiles")
    p = _profile(2)
    p["per_head"]["masked"][2][1] = 0.9
    s = bench.summary(p)
    assert s["masked"]["best_head"] == 0.9 and s["masked"]["best_head_at"] == [2, 1]
    assert s["masked"]["best_layer_at"] == 2


def test_cli_writes_the_table_and_rejects_other_files(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("compare_profiles")
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"p{i}.json")
        paths[-1].write_text(json.dumps(_profile(i, model=f"model{i}")))
    out = tmp_path / "t.md"
    monkeypatch.setattr("sys.argv", ["compare_profiles", *map(str, paths), "--out", str(out)])
    bench.main()
    text = out.read_text()
    assert "model0" in text and "model1" in text and "0.3300" in text and "nfcorpus dev" in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    monkeypatch.setattr("sys.argv", ["compare_profiles", str(paths[0]), str(bad)])
    with pytest.raises(SystemExit, match="not an attnsift head profile"):
        bench.main()
    blockrank = tmp_path / "br.json"
    blockrank.write_text(json.dumps({**_profile(4), "reranker": "blockrank"}))
    monkeypatch.setattr("sys.argv", ["compare_profiles", str(paths[0]), str(blockrank)])
    with pytest.raises(SystemExit, match="compares ICR head profiles"):
        bench.main()
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps(_profile(3, shape=(2, 2))))
    monkeypatch.setattr("sys.argv", ["compare_profiles", str(paths[0]), str(shape)])
    with pytest.raises(SystemExit, match="different model architectures"):
        bench.main()
