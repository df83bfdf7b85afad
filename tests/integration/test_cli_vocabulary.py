"""One vocabulary in the CLI (issue 20): --quiet and progress on stderr, deprecated spellings that warn in
one line and still work, rerank --index / --encoder, bench --dataset / --index, a copy-pasteable Command line.

Everything runs on a tiny BEIR folder made here (8 documents, 3 queries).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import TINY_DOCS, TINY_QUERIES, write_tiny_beir

from attnsift.cli.main import app

runner = CliRunner()

DOCS, QUERIES = TINY_DOCS, TINY_QUERIES


def _beir(root: Path, docs=DOCS) -> Path:
    return write_tiny_beir(root, docs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _beir(tmp_path_factory.mktemp("vocab") / "tiny")


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """Another corpus (one document changed): an index of it does not belong to ``tiny``."""
    docs = dict(DOCS, d8=("Stars", "Stars shine by fusing hydrogen into helium."))
    return _beir(tmp_path_factory.mktemp("vocab-other") / "other", docs)


def _bm25_index(dataset: Path, out: Path) -> Path:
    from attnsift.eval.datasets import load_dataset
    from attnsift.retrieval.bm25 import BM25Retriever

    ds = load_dataset(str(dataset))
    BM25Retriever.from_corpus(ds.corpus.iter_documents()).save(out, corpus_fingerprint=ds.corpus.fingerprint(),
                                                               dataset=ds.name)
    return out


def _metrics(stdout: str) -> dict:
    obj = json.loads(stdout)
    return {k: obj[k] for k in ("nDCG@10", "MRR@10", "R@100", "AP", "num_queries")}


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def _error(res, *fragments: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


# --------------------------------------------------------------------------------------------- progress
def test_json_shows_progress_on_stderr_and_quiet_silences_it(tiny: Path):
    res = runner.invoke(app, ["rerank", "-d", str(tiny), "--json"])
    assert res.exit_code == 0, res.output
    assert _metrics(res.stdout)["num_queries"] == 3  # stdout is the JSON, nothing else
    assert res.stderr.strip(), "progress lines expected on stderr in --json mode"
    for args in (["--quiet", "rerank", "-d", str(tiny), "--json"], ["rerank", "-d", str(tiny), "--json", "--quiet"]):
        res = runner.invoke(app, args)  # --quiet before or after the command
        assert res.exit_code == 0, res.output
        assert _metrics(res.stdout)["num_queries"] == 3
        assert res.stderr == ""


def test_rerank_console_script_takes_quiet(tiny: Path, capsys):
    from attnsift.cli.main import rerank_main

    with pytest.raises(SystemExit) as exit_:
        rerank_main(["-d", str(tiny), "--json", "--quiet"])
    assert exit_.value.code in (0, None)
    out = capsys.readouterr()
    assert _metrics(out.out)["num_queries"] == 3 and out.err == ""


# --------------------------------------------------------------------------------------------- deprecations
def test_bench_datasets_is_deprecated_but_works(tiny: Path, tmp_path: Path):
    res = runner.invoke(app, ["bench", "quality", "--datasets", str(tiny), "--systems", "bm25", "--out",
                              str(tmp_path / "b"), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert _warnings(res.stderr) == ["warning: bench quality --datasets is deprecated and will be removed in the next "
                                     "release; use --dataset (comma-separated or repeated)"]
    assert (tmp_path / "b" / "results.json").is_file()


def test_explain_short_q_is_deprecated_but_still_the_query_id(tiny: Path, tmp_path: Path):
    # -q is read as the query id (the error names it) and warns once, before the error
    res = runner.invoke(app, ["explain", "-d", str(tiny), "-q", "nope", "--out", str(tmp_path / "e")])
    _error(res, "query 'nope' is not a judged query")
    warnings = _warnings(res.stderr)
    assert len(warnings) == 1 and "explain -q (the query id) is deprecated" in warnings[0]
    assert "use --query-id" in warnings[0]
    res = runner.invoke(app, ["explain", "-d", str(tiny), "--query-id", "nope", "--out", str(tmp_path / "e")])
    _error(res, "query 'nope' is not a judged query")
    assert _warnings(res.stderr) == []
    _error(runner.invoke(app, ["explain", "-d", str(tiny), "--out", str(tmp_path / "e")]), "give --query-id")


def test_rerank_hybrid_with_model_is_the_encoder_deprecated_and_encoder_works(tiny: Path):
    pytest.importorskip("faiss")
    pytest.importorskip("transformers")
    old = runner.invoke(app, ["rerank", "-d", str(tiny), "--retriever", "hybrid", "--model", "minilm", "--json"])
    assert old.exit_code == 0, old.output
    warnings = _warnings(old.stderr)
    assert len(warnings) == 1 and "--model for the encoder" in warnings[0] and "use --encoder" in warnings[0]
    new = runner.invoke(app, ["rerank", "-d", str(tiny), "--retriever", "hybrid", "--encoder", "minilm", "--json"])
    assert new.exit_code == 0, new.output
    assert _warnings(new.stderr) == []
    assert _metrics(new.stdout) == _metrics(old.stdout)
    assert _metrics(new.stdout)["MRR@10"] == 1.0
    via_option = runner.invoke(app, ["rerank", "-d", str(tiny), "--retriever", "hybrid", "--retriever-option",
                                     "encoder=minilm", "--json"])
    assert via_option.exit_code == 0, via_option.output
    assert _metrics(via_option.stdout) == _metrics(new.stdout)


def test_encoder_and_model_contradictions_are_errors_before_work(tiny: Path, monkeypatch):
    import attnsift.eval.datasets as datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    _error(runner.invoke(app, ["rerank", "-d", str(tiny), "--encoder", "minilm"]), "--encoder", "bm25")
    _error(runner.invoke(app, ["rerank", "-d", str(tiny), "--retriever", "dense", "--model", "minilm",
                               "--encoder", "minilm"]), "drop --model")
    _error(runner.invoke(app, ["rerank", "-d", str(tiny), "--device", "cpu"]), "--device", "drop --device")
    _error(runner.invoke(app, ["rerank", "-d", str(tiny), "--reranker", "icr", "--device", "gpu0"]),
           "'gpu0' is not a device")


# --------------------------------------------------------------------------------------------- rerank --index
def test_rerank_with_a_saved_bm25_index_gives_the_same_numbers(tiny: Path, tmp_path: Path):
    idx = _bm25_index(tiny, tmp_path / "idx")
    built = runner.invoke(app, ["--quiet", "rerank", "-d", str(tiny), "--retriever", "bm25", "--json"])
    loaded = runner.invoke(app, ["--quiet", "rerank", "-d", str(tiny), "--index", str(idx), "--json"])
    assert built.exit_code == 0 and loaded.exit_code == 0, (built.output, loaded.output)
    assert _metrics(loaded.stdout) == _metrics(built.stdout)
    assert json.loads(loaded.stdout)["index"] == str(idx)
    # --retriever is the index's kind; another is an error, as is --run beside --index
    _error(runner.invoke(app, ["rerank", "-d", str(tiny), "--index", str(idx), "--retriever", "dense"]),
           "is a bm25 index", "drop --retriever")
    _error(runner.invoke(app, ["rerank", "-d", str(tiny), "--index", str(idx), "--run", "x.trec"]), "--index or --run")


def test_rerank_with_an_index_of_another_corpus_stops_before_work(tiny: Path, other: Path, tmp_path: Path,
                                                                   monkeypatch):
    import attnsift.registry as registry

    idx = _bm25_index(other, tmp_path / "other-idx")
    boom = lambda *a, **k: (_ for _ in ()).throw(AssertionError("work started"))  # noqa: E731
    monkeypatch.setattr(registry, "build_reranker", boom)
    monkeypatch.setattr(registry, "load_index", boom)
    res = runner.invoke(app, ["rerank", "-d", str(tiny), "--index", str(idx), "--reranker", "icr"])
    _error(res, f"the index at {idx} was built on data set 'other'", "--force")
    monkeypatch.undo()
    forced = runner.invoke(app, ["rerank", "-d", str(tiny), "--index", str(idx), "--force", "--json", "--quiet"])
    assert forced.exit_code == 0, forced.output
    _error(runner.invoke(app, ["rerank", "-d", str(tiny), "--index", str(tmp_path / "none")]), "no index at")


# --------------------------------------------------------------------------------------------- bench
def _command_line(results_md: Path) -> list[str]:
    line = next(line for line in results_md.read_text().splitlines() if line.startswith("Command: "))
    return shlex.split(re.fullmatch(r"Command: `(.*)`", line).group(1))


def test_bench_dataset_index_and_a_command_line_that_round_trips(tiny: Path, other: Path, tmp_path: Path):
    idx = _bm25_index(tiny, tmp_path / "tiny-bm25")
    out = tmp_path / "bench"
    systems = "bm25,bm25[k1=1.2;b=0.75]"
    res = runner.invoke(app, ["--quiet", "bench", "quality", "-d", str(tiny), "--dataset", str(other), "--systems",
                              systems, "--index", str(idx), "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["metadata"]["datasets"] == [str(tiny), str(other)]
    assert results["metadata"]["indexes"] == {str(tiny): [str(idx)]}
    rows = {(r["dataset"], r["system"]): r for r in results["results"]}
    assert len(rows) == 4
    # the index stood in for tiny's plain bm25 (its key says so); bm25[k1=...] built its own; same numbers as built
    configs = [json.loads(p.read_text()) for p in (out / "tiny" / "bm25").glob("*/config.json")]
    assert len(configs) == 1 and configs[0]["first_stage_files"] is not None
    plain = runner.invoke(app, ["--quiet", "rerank", "-d", str(tiny), "--json", "--metrics", "nDCG@10,MRR@10,R@100"])
    assert rows[(str(tiny), "bm25")]["nDCG@10"] == json.loads(plain.stdout)["nDCG@10"]

    args = _command_line(out / "results.md")
    assert args[:3] == ["attnsift", "bench", "quality"]
    assert args[args.index("--systems") + 1] == systems  # the brackets and ';' survive the shell
    assert args[args.index("--dataset") + 1] == f"{tiny},{other}"
    again = runner.invoke(app, ["--quiet", *args[1:]])  # the recorded line reruns the same bench: all done
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["results"] == results["results"]


def test_bench_index_of_no_listed_data_set_stops_before_any_work(tiny: Path, other: Path, tmp_path: Path):
    idx = _bm25_index(other, tmp_path / "other-bm25")
    out = tmp_path / "bench"
    res = runner.invoke(app, ["bench", "quality", "-d", str(tiny), "--systems", "bm25", "--index", str(idx),
                              "--out", str(out)])
    _error(res, f"--index {idx} was built on data set 'other'", "none of the listed data sets")
    assert not (out / "tiny").exists()
    _error(runner.invoke(app, ["bench", "quality", "--systems", "bm25", "--out", str(out)]), "give --dataset")
