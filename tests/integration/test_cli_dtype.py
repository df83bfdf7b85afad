"""--dtype: the reranker model's precision from the command line (bfloat16 is faster on CPUs with AVX512-BF16,
benchmarks/results/icr_cpu_dtypes.md), checked before anything loads."""
import json

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app

torch = pytest.importorskip("torch")
runner = CliRunner()


def test_rerank_dtype_bfloat16_runs_the_model_in_bfloat16(tiny_model_dir, data_dir):
    from attnsift.registry import build_reranker

    assert build_reranker("icr", model=str(tiny_model_dir), dtype="bfloat16").model.dtype == torch.bfloat16
    res = runner.invoke(app, ["--quiet", "rerank", "--dataset", "scifact", "--reranker", "icr", "--model",
                              str(tiny_model_dir), "--dtype", "bfloat16", "--depth", "3", "--max-queries", "2",
                              "--option", "max_words=20", "--json"])
    assert res.exit_code == 0, res.output
    assert 0.0 <= json.loads(res.stdout)["nDCG@10"] <= 1.0


@pytest.mark.parametrize("args, message", [(["--reranker", "icr", "--dtype", "bf32"], "unknown dtype 'bf32'"),
                                           (["--dtype", "bfloat16"], "--dtype is the reranker model's precision")])
def test_bad_dtype_is_refused_before_work(args, message):
    res = runner.invoke(app, ["rerank", "--dataset", "scifact", "--max-queries", "1", *args])
    assert res.exit_code == 2 and message in res.output, res.output
