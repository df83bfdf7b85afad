"""The GPU benchmark's code path, run on CPU at toy shapes under the Triton interpreter.

A lent GPU session is short; this keeps `benchmarks/kernels.py --gpu` from failing there on plumbing
(shapes, signatures, the correctness checks it makes before timing).
"""
import types

import pytest
from helpers import load_benchmark

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

def test_gpu_benchmark_code_runs_at_toy_shapes_and_checks_outputs():
    bench = load_benchmark("kernels")
    res = bench.gpu_bench(types.SimpleNamespace(repeats=1), device="cpu", shapes=bench.SMOKE_SHAPES)
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
    res.update(command="test", date="today", torch=torch.__version__)
    md = bench.gpu_markdown(res)
    assert "| 160 | 5 |" in md and "MaxSim" in md
