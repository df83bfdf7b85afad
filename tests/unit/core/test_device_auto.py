"""One device spelling for everything model-backed: ``auto`` besides cpu / cuda / cuda:N, in the library
(attnsift.config.resolve_device), every CLI --device (cli/common.check_device) and the GPU benchmark
scripts; a CUDA device this machine lacks is a one-line error before any work."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from attnsift.cli.common import check_device, concrete_device  # noqa: E402
from attnsift.config import resolve_device, resolve_dtype  # noqa: E402

HERE = "cuda" if torch.cuda.is_available() else "cpu"
COUNT = torch.cuda.device_count() if torch.cuda.is_available() else 0
BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def test_resolve_device_auto_picks_cuda_when_there_is_one():
    for given in ("auto", " AUTO ", None):
        assert resolve_device(given).type == HERE
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")).type == "cpu"
    # the dtype default follows the device auto resolves to (float32 on the CPU)
    assert resolve_dtype(None, "auto") == (torch.float32 if HERE == "cpu" else torch.bfloat16)
    assert resolve_dtype(None, "auto", accelerator_default="float32") == torch.float32


def test_resolve_device_refuses_what_is_not_here():
    with pytest.raises(ValueError, match="unknown device 'gpu'; expected 'auto'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match=r"cuda:\d+.*(no CUDA device|CUDA device\(s\))"):
        resolve_device(f"cuda:{COUNT}")  # one past the last device (cuda:0 on a machine without one)
    if COUNT == 0:
        with pytest.raises(ValueError, match="torch sees no CUDA device here; use device='cpu' or 'auto'"):
            resolve_device("cuda")


def test_cli_check_device_accepts_auto_and_names_the_choices():
    assert check_device(None) is None
    assert check_device("auto") == "auto" and check_device(" Auto") == "auto"
    assert check_device("cpu") == "cpu"
    assert concrete_device("auto") == HERE and concrete_device("cpu") == "cpu" and concrete_device(None) is None
    with pytest.raises(ValueError, match="give auto, cpu, cuda or cuda:N"):
        check_device("gpu0")
    with pytest.raises(ValueError, match="--device cpu or auto"):
        check_device(f"cuda:{COUNT}")


def test_auto_is_accepted_where_nothing_runs_a_model_but_cpu_is_not():
    from attnsift.registry import build_reranker, build_retriever

    bm25 = build_retriever("bm25", ["granite is a rock", "stars shine"], device="auto")
    assert bm25.retrieve("rock", k=1).doc_ids == ["d0"]
    with pytest.raises(ValueError, match="runs no model"):
        build_retriever("bm25", ["a text"], device="cpu")
    assert build_reranker("none", device="auto").name == "none"


def test_cli_rerank_device_auto_and_a_missing_gpu(tmp_path):
    from typer.testing import CliRunner

    from attnsift.cli.main import app
    from helpers import write_tiny_beir

    data = write_tiny_beir(tmp_path / "tiny")
    runner = CliRunner()
    res = runner.invoke(app, ["rerank", "--dataset", str(data), "--device", "auto", "--json"])
    assert res.exit_code == 0, res.output  # BM25 alone: auto asks for nothing, so it is no error
    res = runner.invoke(app, ["rerank", "--dataset", str(data), "--device", "cpu"])
    assert res.exit_code == 2 and "nothing here runs a model" in res.stderr
    res = runner.invoke(app, ["rerank", "--dataset", str(data), "--reranker", "icr", "--device", f"cuda:{COUNT}"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "use --device cpu or auto" in res.stderr


def test_bench_keys_auto_by_the_device_it_resolves_to(tmp_path):
    from attnsift.bench.quality import run_quality_bench
    from helpers import write_tiny_beir

    data = str(write_tiny_beir(tmp_path / "tiny"))
    res = run_quality_bench([data], ["bm25"], tmp_path / "out", device="auto", plots=False)
    assert res.metadata["device"] == HERE
    config = next((tmp_path / "out").glob("*/bm25/*/config.json"))
    assert f'"device": "{HERE}"' in config.read_text()


@pytest.mark.parametrize("argv", [
    ["rerank_gpu_cost.py", "--shape", "tiny"],
    ["blockrank.py", "cost"],
    ["kernels.py"],
])
def test_gpu_benchmark_scripts_take_device_and_refuse_a_missing_one_in_one_line(argv):
    script, *rest = argv
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *rest, "--device", f"cuda:{COUNT}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "error: device" in last and f"cuda:{COUNT}" in last and "Traceback" not in proc.stderr
