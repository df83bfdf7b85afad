"""`benchmarks/kernels.py --smoke`: the GPU benchmark's code, run as a script on CPU at toy shapes under
the Triton interpreter.

A lent GPU session is short; this keeps `benchmarks/kernels.py --gpu` from failing there on plumbing
(shapes, signatures, the correctness checks it makes before timing). The script is run as a subprocess,
as a user runs it; nothing imports it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


def test_gpu_benchmark_code_runs_at_toy_shapes_and_checks_outputs(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "kernels_gpu_smoke.json").read_text())
    (bs,) = res["block_sparse"]
    assert bs["docs"] == (160 - 2 * 20) // 24 and bs["tokens"] == 160
    # the useful pairs are fewer than the causal triangle's (masked tiles skipped)
    assert 0 < bs["useful_tflop"] < bs["dense_causal_tflop"]
    assert bs["max_abs_diff_triton_vs_reference"] < 1e-4
    assert "flex_error" in bs or bs["max_abs_diff_triton_vs_flex"] < 1e-4
    (seg,) = res["segment_mass"]
    assert seg["max_abs_diff_vs_reference"] < 1e-5 and seg["segment_mass_s"] > 0
    (ms,) = res["maxsim"]
    assert ms["max_abs_diff_vs_einsum"] < 1e-4 and ms["docs"] == 6
    assert res["command"] == f"python benchmarks/kernels.py --smoke --out {tmp_path}"
    md = (tmp_path / "kernels_gpu_smoke.md").read_text()
    assert "| 160 | 5 |" in md and "MaxSim" in md


def test_smoke_without_the_interpreter_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "TRITON_INTERPRET=1" in proc.stderr
    assert not (tmp_path / "kernels_gpu_smoke.json").exists()
