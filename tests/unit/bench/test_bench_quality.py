"""System specs and the resumable quality benchmark."""
import json
from pathlib import Path

import pytest

from attnsift.bench.quality import _Interrupted, run_quality_bench
from attnsift.bench.specs import SystemSpec, split_specs


def test_spec_parsing_and_labels():
    s = SystemSpec.parse("bm25+icr:smollm2-135m[calibration=none;depth=50]")
    assert s.first.name == "bm25" and s.reranker.name == "icr" and s.reranker.model == "smollm2-135m"
    assert dict(s.reranker.options) == {"calibration": "none"}
    assert s.depth == 50 and s.first_stage_k == 100
    assert s.label == "bm25+icr:smollm2-135m[calibration=none]@50"
    assert s.to_dict()["depth"] == 50 and "top_k" not in s.to_dict()
    assert SystemSpec.parse("bm25+icr").depth == 20 and SystemSpec.parse("bm25").depth is None
    # option order does not change the label
    assert SystemSpec.parse("bm25+icr[b=2;a=1]").label == SystemSpec.parse("bm25+icr[a=1;b=2]").label
    assert SystemSpec.parse("dense:minilm").first.model == "minilm"
    assert SystemSpec.parse("run:bm25+icr").first.model == "bm25"
    assert SystemSpec.parse("bm25+none").reranker is None
    # the default depth follows a smaller first stage; an explicit one never silently moves
    short = SystemSpec.parse("bm25[first_stage_k=10]+icr")
    assert (short.first_stage_k, short.depth, short.label) == (10, 10, "bm25+icr@10/10")


@pytest.mark.parametrize("bad, msg", [
    ("", "empty"), ("magic", "unknown first stage"), ("bm25+magic", "unknown reranker"),
    ("bm25+icr+icr", "stages"), ("run", "provided run"), ("bm25+icr[depth=0]", "positive"),
    ("bm25+icr[calibration]", "key=value"),
    ("bm25+icr[top_k=50]", "now called depth: write depth=50"),
    ("bm25[first_stage_k=10;depth=50]+icr", r"depth \(50\) is larger than first_stage_k \(10\)"),
    ("bm25[depth=5]", "no reranker"), ("bm25[depth=5]+icr[depth=6]", "twice"),
])
def test_spec_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        SystemSpec.parse(bad)


def test_split_specs_respects_brackets():
    assert split_specs("bm25, bm25+icr[a=1,2;b=3],dense:minilm") == ["bm25", "bm25+icr[a=1,2;b=3]", "dense:minilm"]
    with pytest.raises(ValueError, match="unbalanced"):
        split_specs("bm25+icr[a=1")


def _numbers(out: Path) -> dict:
    rows = json.loads((out / "results.json").read_text())["results"]
    return {(r["dataset"], r["system"]): {k: r[k] for k in ("nDCG@10", "MRR@10", "R@100", "num_queries")} for r in rows}


def _key_folder(out: Path, dataset: str, system: str) -> Path:
    """The one key folder of ``system`` on ``dataset`` under ``out``."""
    (folder,) = (out / dataset / SystemSpec.parse(system).slug).glob("*/config.json")
    return folder.parent


def test_interrupted_run_resumes_to_the_same_numbers(data_dir, tmp_path: Path):
    args = dict(datasets=["dl19"], systems=["bm25", "run:splade"], max_queries=12, progress=False, plots=False)
    full = tmp_path / "full"
    run_quality_bench(out_dir=full, **args)

    part = tmp_path / "part"
    with pytest.raises(_Interrupted):
        run_quality_bench(out_dir=part, stop_after=5, **args)
    progress = _key_folder(part, "dl19", "bm25") / "progress.jsonl"
    assert len(progress.read_text().splitlines()) == 5
    assert not list((part / "dl19" / "bm25").rglob("metrics.json"))  # partial is never taken as complete
    # an interruption in the middle of writing a line: the torn line is discarded and redone
    with open(progress, "a") as fh:
        fh.write('{"qid": "torn", "docs": [["1", 0.5')
    res = run_quality_bench(out_dir=part, **args)
    assert res.get("dl19", "bm25").resumed_queries == 5
    assert _numbers(part) == _numbers(full)
    resumed_run = (res.get("dl19", "bm25").folder / "run.trec").read_bytes()
    assert resumed_run == (full / res.get("dl19", "bm25").folder.relative_to(part) / "run.trec").read_bytes()

    # a rerun skips complete work
    again = run_quality_bench(out_dir=part, **args)
    assert all(r.skipped for r in again.results.values())


def test_a_larger_query_set_extends_the_progress_of_the_same_key(data_dir, tmp_path: Path):
    out = tmp_path / "b"
    small = run_quality_bench(["dl19"], ["bm25"], out, max_queries=5, progress=False, plots=False)
    res = run_quality_bench(["dl19"], ["bm25"], out, max_queries=8, progress=False, plots=False)
    r = res.get("dl19", "bm25")
    assert not r.skipped and r.report.num_queries == 8 and r.resumed_queries == 5
    assert len((_key_folder(out, "dl19", "bm25") / "progress.jsonl").read_text().splitlines()) == 8
    assert (small.get("dl19", "bm25").folder / "metrics.json").is_file()  # the 5-query result is kept


def test_reports_and_plots_are_written(data_dir, tmp_path: Path):
    res = run_quality_bench(["scifact"], ["bm25", "bm25[k1=1.2;b=0.75]"], tmp_path, max_queries=6, progress=False)
    md = (tmp_path / "results.md").read_text()
    assert "| bm25 |" in md and "bm25[b=0.75;k1=1.2]" in md
    for png in ("quality_vs_cost.png", "per_query_delta.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["metadata"]["max_queries"] == 6 and len(data["results"]) == 2
    # different BM25 parameters really were used
    a, b = res.get("scifact", "bm25"), res.get("scifact", "bm25[k1=1.2;b=0.75]")
    assert a.report.per_query != b.report.per_query or a.report.aggregate != b.report.aggregate


def test_attach_texts_one_pass_depth_only_and_foreign_runs(data_dir):
    from attnsift.eval.datasets import load_dataset
    from attnsift.pipeline import attach_texts
    from attnsift.types import Candidate, Ranking, Run

    ds = load_dataset("dl19").subset(max_queries=3)
    run = ds.load_run("bm25")
    assert all(c.document is None for rk in run.values() for c in rk)  # a provided run carries no text
    out = attach_texts(run, ds.corpus, 5)
    for rk in out.values():
        assert all(c.document is not None and c.document.id == c.doc_id for c in rk.top(5))
        assert all(c.document is None for c in rk.candidates[5:])  # only what will be reranked is read
        assert rk.doc_ids == run[rk.query.id].doc_ids  # order and scores untouched
    q = next(iter(ds.queries.values()))
    foreign = Run([Ranking(q, (Candidate("not-a-passage", 1.0),))])
    with pytest.raises(ValueError, match="does not belong"):
        attach_texts(foreign, ds.corpus, 5)


class _FixedCost:
    """A reranker whose scoring reports a fixed compute time (as ICR does for a pass shared by two systems)."""

    name = "fixed"
    needs_text = False

    def rerank_detailed(self, ranking, k=None):
        from attnsift.rerank.base import Reranked

        return Reranked(ranking, 2.0)

    def rerank(self, ranking, k=None):
        return ranking


def test_bench_records_the_rerankers_own_seconds(data_dir, tmp_path: Path, monkeypatch):
    import attnsift.bench.quality as quality

    monkeypatch.setattr("attnsift.registry.build_reranker", lambda name, model=None, options=None: _FixedCost())
    res = run_quality_bench(["dl19"], ["bm25", "bm25+icr"], tmp_path, max_queries=4, progress=False, plots=False)
    assert res.get("dl19", "bm25+icr").seconds_per_query >= 2.0  # first-stage share + the reported 2 s
    assert res.get("dl19", "bm25").seconds_per_query < 2.0
    folder = _key_folder(tmp_path, "dl19", "bm25+icr")
    lines = [json.loads(x) for x in (folder / "progress.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all(rec["seconds"] >= 2.0 for rec in lines)
    assert quality.FORMAT_VERSION == 3
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["system"]["depth"] == 20 and cfg["format"] == 3


def test_icr_systems_of_one_bench_share_their_forward_passes(data_dir, tmp_path: Path, monkeypatch):
    """Two ICR systems differing only in calibration run each prompt once (a shared MassCache)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers import tiny_llama_and_tokenizer

    import attnsift.rerank.icr as icr_mod
    from attnsift.rerank.icr import ICRReranker

    model, tok = tiny_llama_and_tokenizer(layers=2, heads=2, seed=0)
    monkeypatch.setattr("attnsift.registry.build_reranker",
                        lambda name, model=None, options=None: ICRReranker(model_obj, tokenizer=tok, **(options or {})))
    model_obj = model
    calls = []
    real = icr_mod.span_masses
    monkeypatch.setattr(icr_mod, "span_masses", lambda *a, **k: calls.append(1) or real(*a, **k))
    systems = ["bm25+icr[depth=3;max_words=20]", "bm25+icr[depth=3;max_words=20;calibration=none]"]
    res = run_quality_bench(["scifact"], systems, tmp_path, max_queries=2, progress=False, plots=False)
    assert len(calls) == 2  # 2 queries, one pass each, for both systems
    a, b = (res.get("scifact", s) for s in systems)
    assert a.seconds_per_query > 0 and b.seconds_per_query > 0
    # different scores from the same masses: the runs differ in their scores
    ra = (a.folder / "run.trec").read_text()
    rb = (b.folder / "run.trec").read_text()
    assert ra != rb


def test_results_metadata_lists_installed_versions_whatever_was_imported(monkeypatch):
    """A rerun that finds every result finished imports no ir_measures/torch: results.json must not change
    (found by benchmarks/faults.py: 11 of 60 resumed benches differed only there)."""
    import sys

    from attnsift.bench.quality import _metadata

    for mod in ("ir_measures", "bm25s"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    versions = _metadata(["scifact"], [], None, ["nDCG@10"], 1.0)["versions"]
    assert {"ir_measures", "bm25s"} <= set(versions)
