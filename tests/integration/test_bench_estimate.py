"""The quality bench prints one time estimate per long system, measured on its first queries."""
from __future__ import annotations

from pathlib import Path

from attnsift import progress
from attnsift.bench.quality import run_quality_bench


def test_bench_prints_one_estimate_for_a_long_system(tmp_path: Path, tiny_model_dir: Path, data_dir: Path,
                                                     monkeypatch, capsys):
    class Eager(progress.Estimator):  # every run counts as long: the line must come, once per system
        def __init__(self, *args, **kwargs):
            kwargs.update(threshold_s=0.0, sample_s=1e-9, max_sample=1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(progress, "Estimator", Eager)
    spec = f"bm25+icr:{tiny_model_dir}[depth=3;max_words=10]"
    run_quality_bench(["scifact"], ["bm25", spec], tmp_path / "out", max_queries=3, progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("estimate:")]
    assert len(lines) == 1, err  # the reranking system; BM25 alone only reads its cached first-stage run
    assert "for 3 queries" in lines[0] and "on scifact" in lines[0] and "device cpu" in lines[0]
    # a rerun finds everything done: no estimate
    run_quality_bench(["scifact"], ["bm25", spec], tmp_path / "out", max_queries=3, progress=True)
    assert "estimate:" not in capsys.readouterr().err
