"""`attnsift analyze heads` checks everything it can before the model loads: too few held-out queries
(with the figure needed), a bad model name, device or option; and its vocabulary (--option max_words=,
the deprecated --max-words)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app
from tests.integration.test_cli_analyze import write_beir

runner = CliRunner()


@pytest.fixture
def unloadable_model(tmp_path: Path) -> Path:
    """A folder that passes the name check (it has a config.json) but fails as soon as anything loads it:
    an analysis that reaches the model fails with another message than the ones asserted below."""
    d = tmp_path / "not-a-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    return d


def _heads(tmp_path: Path, model: Path | str, *args: str):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    res = runner.invoke(app, ["analyze", "heads", "--model", str(model), "--split", "dev",
                              "--out", str(tmp_path / "p.json"), *args], env={"ATTNSIFT_CACHE": str(cache)})
    seconds = time.perf_counter() - t0
    # nothing expensive started: no head-masses folder, no profile
    assert not (cache / "heads").exists() and not (tmp_path / "p.json").exists()
    return res, seconds


def test_too_few_queries_fails_before_the_model_and_names_the_figure(tmp_path, unloadable_model):
    data = write_beir(tmp_path / "toy")  # 8 judged dev queries
    res, seconds = _heads(tmp_path, unloadable_model, "--dataset", str(data), "--depth", "5", "--max-queries", "3")
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line == ("error: analyze heads needs at least 5 held-out queries with 5 BM25 candidates each; toy dev has 3 "
                    "(of 3 judged) with --max-queries 3: raise --max-queries to >= 5 or pass --all-lists"), line
    assert seconds < 20


def test_not_enough_judged_queries_in_the_split(tmp_path, unloadable_model):
    data = write_beir(tmp_path / "toy")
    rows = (data / "qrels" / "dev.tsv").read_text().splitlines()
    keep = [r for r in rows if not r.startswith(("Q4", "Q5", "Q6", "Q7"))]  # 4 judged queries left
    (data / "qrels" / "dev.tsv").write_text("\n".join(keep) + "\n")
    res, _ = _heads(tmp_path, unloadable_model, "--dataset", str(data), "--depth", "5")
    assert res.exit_code == 2, res.output
    assert "needs at least 5 held-out queries" in res.output and "toy dev has 4 (of 4 judged)" in res.output
    assert "choose another --dataset or --split" in res.output


def test_lists_shorter_than_depth_suggest_all_lists(tmp_path, unloadable_model):
    data = write_beir(tmp_path / "toy")  # 30 documents: at most 30 candidates, fewer with BM25's zero scores
    res, _ = _heads(tmp_path, unloadable_model, "--dataset", str(data), "--depth", "40")
    assert res.exit_code == 2, res.output
    assert "with 40 BM25 candidates each; toy dev has 0 (of 8 judged)" in res.output
    assert "--all-lists" in res.output


def test_model_device_and_options_are_checked_before_the_data(tmp_path):
    absent = tmp_path / "no-such-set"  # the data set is never reached: each error comes first
    res, seconds = _heads(tmp_path, "smollm2-135mm", "--dataset", str(absent))
    assert res.exit_code == 2 and "did you mean 'smollm2-135m'" in res.output, res.output
    res, _ = _heads(tmp_path, "smollm2-135m", "--dataset", str(absent), "--device", "gpu0")
    assert res.exit_code == 2 and "--device 'gpu0' is not a device" in res.output, res.output
    res, _ = _heads(tmp_path, "smollm2-135m", "--dataset", str(absent), "--option", "max_words=lots")
    assert res.exit_code == 2 and "max_words" in res.output and "no-such-set" not in res.output, res.output
    res, _ = _heads(tmp_path, "smollm2-135m", "--dataset", str(absent), "--max-queries", "0")
    assert res.exit_code == 2 and "--max-queries" in res.output, res.output
    assert seconds < 20


def test_option_max_words_is_accepted_and_max_words_is_deprecated(tmp_path, unloadable_model):
    data = write_beir(tmp_path / "toy")
    few = ["--dataset", str(data), "--depth", "5", "--max-queries", "3"]
    # accepted (it was refused before): the run goes on to the held-out count
    res, _ = _heads(tmp_path, unloadable_model, *few, "--option", "max_words=8")
    assert res.exit_code == 2 and "needs at least 5 held-out queries" in res.output, res.output
    assert "deprecated" not in res.output
    res, _ = _heads(tmp_path, unloadable_model, *few, "--max-words", "8")
    assert res.exit_code == 2 and "needs at least 5 held-out queries" in res.output, res.output
    assert "warning: --max-words is deprecated" in res.output and "--option max_words=8" in res.output
    res, _ = _heads(tmp_path, unloadable_model, *few, "--max-words", "8", "--option", "max_words=9")
    assert res.exit_code == 2 and "disagree" in res.output, res.output
    # the old spellings are hidden from --help, the new one is shown
    res = runner.invoke(app, ["analyze", "heads", "--help"], env={"COLUMNS": "200"})
    assert "--max-words" not in res.output and "--block-tokens" not in res.output and "--device" in res.output
