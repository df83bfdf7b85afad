"""The CLI end to end on the real data: through typer's CliRunner and as a subprocess."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app

runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_help_is_fast_and_lists_commands():
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from attnsift.cli.main import app; "
                           "print('torch' in sys.modules, 'transformers' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"]
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("datasets", "index", "retrieve", "evaluate", "rerank"):
        assert cmd in result.stdout


def test_evaluate_provided_dl19_runs_reproduce_anserini(data_dir: Path):
    runs = data_dir / "trec-dl19-passage" / "runs"
    bm25 = _json(runner.invoke(app, ["evaluate", "--dataset", "dl19", "--run", str(runs / "bm25_flat.top100.trec"), "--json"]))
    splade = _json(runner.invoke(app, ["evaluate", "--dataset", "dl19", "--run", str(runs / "splade_pp_ed.top100.trec"), "--json"]))
    assert bm25["nDCG@10"] == pytest.approx(0.5058, abs=5e-5)
    assert splade["nDCG@10"] == pytest.approx(0.7308, abs=5e-5)
    assert bm25["num_queries"] == 43


def test_evaluate_compare_gives_paired_test(data_dir: Path):
    runs = data_dir / "trec-dl19-passage" / "runs"
    args = ["evaluate", "--dataset", "dl19", "--run", str(runs / "splade_pp_ed.top100.trec"),
            "--baseline", str(runs / "bm25_flat.top100.trec")]
    out = _json(runner.invoke(app, [*args, "--json"]))
    cmp = out["comparison"]
    assert (cmp["a"], cmp["b"]) == ("bm25_flat.top100.trec", "splade_pp_ed.top100.trec")
    assert cmp["common_queries"] == 43 and set(cmp["metrics"]) == {"nDCG@10", "MRR@10", "R@100", "AP"}
    ndcg = cmp["metrics"]["nDCG@10"]
    assert ndcg["mean_a"] == pytest.approx(0.5058, abs=5e-5)  # BM25, as evaluated alone
    assert ndcg["mean_b"] == pytest.approx(out["nDCG@10"], abs=1e-12) == pytest.approx(0.7308, abs=5e-5)
    for m in cmp["metrics"].values():
        assert m["diff"] == pytest.approx(m["mean_b"] - m["mean_a"], abs=1e-12)
        assert 0.0 <= m["p"] <= 1.0 and m["n"] == 43
    assert ndcg["p"] < 0.01  # SPLADE++ is far above BM25 on DL19
    # the table has both systems, the baseline marked, and the significant difference flagged (†)
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "bm25_flat.top100.trec (baseline)" in table.stdout and "splade_pp_ed.top100.trec" in table.stdout
    assert f"{ndcg['mean_a']:.4f} " in table.stdout and f"{ndcg['mean_b']:.4f}†" in table.stdout


def test_rerank_bm25_subset_json_and_save_run(data_dir: Path, tmp_path: Path):
    run_file = tmp_path / "bm25.trec"
    out = _json(runner.invoke(app, ["rerank", "--dataset", "scifact", "--retriever", "bm25", "--max-queries", "25",
                                    "--save-run", str(run_file), "--json"]))
    assert out["num_queries"] == 25
    for key in ("nDCG@10", "MRR@10", "R@100", "AP", "timing"):
        assert key in out
    assert 0.5 < out["nDCG@10"] <= 1.0
    lines = run_file.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) == 25
    assert all(len(line.split()) == 6 for line in lines)
    # the saved run evaluates to the same figure
    again = _json(runner.invoke(app, ["evaluate", "--dataset", "scifact", "--run", str(run_file), "--json"]))
    assert again["nDCG@10"] == pytest.approx(out["nDCG@10"], abs=1e-9)


def test_rerank_provided_run_with_identity(data_dir: Path, tmp_path: Path):
    out = _json(runner.invoke(app, ["rerank", "--dataset", "dl19", "--run", "bm25", "--json"]))
    assert out["nDCG@10"] == pytest.approx(0.5058, abs=5e-5)
    assert (out["first_stage_k"], out["depth"], out["k"]) == (100, None, None)
    # -k cuts the final run; a run file stands in for the first stage with the data set's query texts
    run_file = tmp_path / "cut.trec"
    cut = _json(runner.invoke(app, ["rerank", "--dataset", "dl19", "--run", "bm25", "-k", "10",
                                    "--save-run", str(run_file), "--json"]))
    assert cut["k"] == 10 and cut["nDCG@10"] == pytest.approx(out["nDCG@10"], abs=1e-12) and cut["R@100"] < out["R@100"]
    lines = run_file.read_text().splitlines()
    assert len(lines) == 43 * 10
    again = _json(runner.invoke(app, ["rerank", "--dataset", "dl19", "--run", str(run_file), "--max-queries", "5", "--json"]))
    assert again["num_queries"] == 5


def test_rerank_old_top_k_flag_is_gone(data_dir: Path):
    result = runner.invoke(app, ["rerank", "--dataset", "scifact", "--top-k", "20"])
    assert result.exit_code == 2
    assert "No such option" in result.output and "--top-k" in result.output


@pytest.mark.parametrize("args, message", [
    (["rerank", "--dataset", "no-such-set"], "unknown data set"),
    (["rerank", "--dataset", "scifact", "--reranker", "icr", "--depth", "0"], "positive integer"),
    (["rerank", "--dataset", "scifact", "--reranker", "icr", "--depth", "200"], "larger than first_stage_k (100)"),
    (["rerank", "--dataset", "scifact", "--first-stage-k", "10", "-k", "20"], "k (20) is larger than first_stage_k (10)"),
    (["rerank", "--dataset", "scifact", "--depth", "20"], "no reranker"),
    (["rerank", "--dataset", "dl19", "--retriever-option", "k1=1.2"], "provided run 'bm25_flat'"),
    (["rerank", "--dataset", "dl19", "--run", "no-such-run", "--reranker", "icr"], "no provided run 'no-such-run'"),
    (["rerank", "--dataset", "scifact", "--reranker", "magic"], "unknown reranker"),
    (["rerank", "--dataset", "scifact", "--option", "calibration"], "key=value"),
    (["rerank", "--dataset", "scifact", "--metrics", "nDCG@ten", "--max-queries", "2"], "metric"),
    (["evaluate", "--dataset", "dl19", "--run", "/no/such/run.trec"], "does not exist"),
    (["retrieve", "--retriever", "bm25"], "--dataset"),
])
def test_bad_input_is_one_clear_line(args, message, data_dir: Path):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_folder_path_is_reported(tmp_path: Path):
    result = runner.invoke(app, ["rerank", "--dataset", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_index_then_retrieve_ad_hoc(data_dir: Path, tmp_path: Path):
    idx = tmp_path / "scifact-bm25"
    result = runner.invoke(app, ["index", "--dataset", "scifact", "--out", str(idx)])
    assert result.exit_code == 0, result.output
    assert (idx / "manifest.json").is_file()
    # refuses to overwrite silently
    again = runner.invoke(app, ["index", "--dataset", "scifact", "--out", str(idx)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    out = _json(runner.invoke(app, ["retrieve", "--index", str(idx), "--query", "vitamin D bone density",
                                    "-k", "5", "--json"]))
    results = out["queries"][0]["results"]
    assert len(results) == 5 and results[0]["score"] >= results[-1]["score"]


def test_rerank_console_script_equals_attnsift_rerank(data_dir: Path):
    exe = shutil.which("rerank", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the `rerank` console script is not installed in this environment")
    env = {**os.environ, "ATTNSIFT_DATA": str(data_dir)}
    proc = subprocess.run([exe, "--dataset", "dl19", "--run", "bm25", "--json"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["nDCG@10"] == pytest.approx(0.5058, abs=5e-5)
    bad = subprocess.run([exe, "--dataset", "msmarco-nope"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "unknown data set" in bad.stderr
