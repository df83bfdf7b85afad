"""`benchmarks/rerank_gpu_cost.py` at toy shapes on CPU: the code a lent GPU runs at Mistral-7B shapes,
run as a script (a subprocess, as a user runs it; nothing imports it)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "rerank_gpu_cost.py"


def test_cost_benchmark_runs_both_rerankers_and_blockrank_grows_linearly(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shape", "tiny", "--device", "cpu", "--candidates", "2", "4",
                           "6", "--doc-tokens", "8", "--repeats", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "rerank_cost_tiny_cpu.json").read_text())
    rows = {(r["system"], r["candidates"]): r for r in res["rows"]}
    assert not [r for r in res["rows"] if "error" in r]
    assert set(rows) == {(s, n) for s in ("blockrank", "icr") for n in (2, 4, 6)}
    t2, t4, t6 = (rows[("blockrank", n)]["tokens"] for n in (2, 4, 6))
    assert t4 - t2 == t6 - t4 >= 2 * 8  # every document adds the same block (8 words + its ID frame)
    assert rows[("blockrank", 2)]["scoring_layer"] == 2  # middle of the tiny model's 4 layers
    assert all(r["seconds"] > 0 and r["peak_mb"] > 0 for r in res["rows"])
    md = (tmp_path / "rerank_cost_tiny_cpu.md").read_text()
    assert "| blockrank | 6 |" in md and "ICR time / BlockRank time" in md
