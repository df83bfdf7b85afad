"""bench quality's storage: results keyed by content, nothing deleted, one writer, damaged progress lines."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnsift.bench.quality import _Interrupted, run_quality_bench
from attnsift.bench.store import BenchBusyError, bench_lock, read_progress

DOCS = [("d1", "apples and pears grow on trees"), ("d2", "the river runs to the sea"),
        ("d3", "pears are sweet fruit"), ("d4", "the sea is deep and blue"),
        ("d5", "trees lose leaves in autumn"), ("d6", "a blue river of apples")]
QUERIES = [("q1", "apples"), ("q2", "sea"), ("q3", "pears fruit"), ("q4", "river"), ("q5", "trees"), ("q6", "blue")]
QRELS = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d2", "q5": "d5", "q6": "d4"}


def _folder(root: Path, qrels: dict[str, str] = QRELS) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in DOCS))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES))
    (root / "qrels").mkdir()
    _qrels(root, qrels)
    return root


def _qrels(root: Path, qrels: dict[str, str]) -> None:
    path = root / "qrels" / "test.tsv"
    old = path.stat() if path.exists() else None
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items()))
    if old is not None:  # a later mtime, as an editor gives (same size: only the content tells)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))


def _bench(data: Path, out: Path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("plots", False)
    return run_quality_bench([str(data)], ["bm25"], out, **kw)


def _ndcg(res, data: Path) -> dict:
    return dict(res.get(str(data), "bm25").report.per_query)


def test_qrels_changed_in_place_are_not_served_old_numbers(tmp_path):
    data, out = _folder(tmp_path / "data" / "tiny"), tmp_path / "out"
    first = _bench(data, out)
    assert first.get(str(data), "bm25").report.per_query["q4"]["nDCG@10"] > 0
    _qrels(data, {**QRELS, "q4": "d6"})  # d6 is not first for "river" but is retrieved
    again = _bench(data, out)
    r = again.get(str(data), "bm25")
    assert not r.skipped
    assert r.report.per_query["q4"]["nDCG@10"] != first.get(str(data), "bm25").report.per_query["q4"]["nDCG@10"]
    assert (first.get(str(data), "bm25").folder / "metrics.json").is_file()  # the old result is kept


def test_same_basename_other_content_gets_its_own_place(tmp_path):
    a = _folder(tmp_path / "a" / "tiny")
    b = _folder(tmp_path / "b" / "tiny", {**QRELS, "q1": "d6", "q2": "d4"})
    out = tmp_path / "out"
    ra, rb = _bench(a, out), _bench(b, out)
    assert not rb.get(str(b), "bm25").skipped
    assert ra.get(str(a), "bm25").folder != rb.get(str(b), "bm25").folder
    assert _ndcg(ra, a) != _ndcg(rb, b)
    assert _bench(a, out).get(str(a), "bm25").skipped  # both kept


def test_fewer_queries_deletes_nothing_and_is_served_from_the_superset(tmp_path):
    data, out = _folder(tmp_path / "data" / "tiny"), tmp_path / "out"
    full = _bench(data, out)
    progress = full.get(str(data), "bm25").folder.parent / "progress.jsonl"
    before = progress.read_bytes()
    two = _bench(data, out, max_queries=2)
    r = two.get(str(data), "bm25")
    assert r.resumed_queries == 2 and r.report.num_queries == 2
    assert progress.read_bytes() == before  # nothing computed again, nothing removed
    assert (full.get(str(data), "bm25").folder / "metrics.json").is_file()
    assert _bench(data, out).get(str(data), "bm25").skipped
    assert all(_ndcg(two, data)[q] == _ndcg(full, data)[q] for q in ("q1", "q2"))


def test_other_metrics_get_their_own_place(tmp_path):
    data, out = _folder(tmp_path / "data" / "tiny"), tmp_path / "out"
    _bench(data, out, metrics=("nDCG@10",))
    _bench(data, out)
    assert _bench(data, out, metrics=("nDCG@10",)).get(str(data), "bm25").skipped


def test_a_damaged_middle_line_costs_that_query_only(tmp_path, caplog):
    data = _folder(tmp_path / "data" / "tiny")
    full = _bench(data, tmp_path / "full")
    out = tmp_path / "part"
    with pytest.raises(_Interrupted):
        _bench(data, out, stop_after=5)
    (progress,) = out.rglob("progress.jsonl")
    lines = progress.read_bytes().splitlines(keepends=True)
    assert len(lines) == 5
    lines[2] = lines[2][:-12] + b"\xff\x00 #\n"  # q3's line: its end overwritten, no longer JSON
    progress.write_bytes(b"".join(lines))
    with caplog.at_level(logging.WARNING, logger="attnsift.bench.store"):
        res = _bench(data, out)
    r = res.get(str(data), "bm25")
    assert r.resumed_queries == 4  # q1, q2, q4, q5 kept; q3 and q6 computed
    msg = " ".join(rec.getMessage() for rec in caplog.records)
    assert f"{progress} line 3" in msg and "'q3'" in msg
    assert (r.folder / "run.trec").read_bytes() == (full.get(str(data), "bm25").folder / "run.trec").read_bytes()
    assert _ndcg(res, data) == _ndcg(full, data)


def test_read_progress_names_torn_and_unreadable_lines(tmp_path, caplog):
    path = tmp_path / "progress.jsonl"
    good = json.dumps({"qid": "a", "docs": [["d1", 1.0]], "seconds": 0.1}) + "\n"
    path.write_text(good + "garbage\n" + json.dumps({"qid": "b", "docs": "x", "seconds": 1}) + "\n"
                    + good.replace('"a"', '"c"') + '{"qid": "torn", "docs": [["d')
    with caplog.at_level(logging.WARNING, logger="attnsift.bench.store"):
        done = read_progress(path)
    assert list(done) == ["a", "c"]
    msg = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "line 2" in msg and "query id unreadable" in msg
    assert "line 3" in msg and "'b'" in msg
    assert "line 5" in msg and "partial last line" in msg and "'torn'" in msg
    assert path.read_text() == good + good.replace('"a"', '"c"')  # rewritten without the damaged lines


def test_a_second_writer_fails_at_once_with_the_pid(tmp_path):
    data, out = _folder(tmp_path / "data" / "tiny"), tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from attnsift.bench.store import bench_lock
        with bench_lock(Path({str(out)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BenchBusyError, match=rf"another attnsift bench is writing {out} \(pid {holder.pid}\); "
                                                 "wait for it or use another --out"):
            _bench(data, out)
        assert not (out / "tiny").exists()  # nothing was written
        from typer.testing import CliRunner

        from attnsift.cli.main import app

        cli = CliRunner().invoke(app, ["bench", "quality", "--dataset", str(data), "--systems", "bm25",
                                       "--out", str(out), "--no-plots"])
        assert cli.exit_code == 2 and f"(pid {holder.pid})" in cli.output and "Traceback" not in cli.output
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert not _bench(data, out).get(str(data), "bm25").skipped  # free again once the holder is gone
    with bench_lock(out):  # and released after a run
        pass


def test_stage_fingerprints_follow_run_and_model_files(tmp_path):
    from attnsift.bench.specs import SystemSpec
    from attnsift.bench.store import stage_fingerprint
    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import DEFAULT_MODELS

    data = _folder(tmp_path / "data" / "tiny")
    (data / "runs").mkdir()
    (data / "runs" / "bm25.trec").write_text("q1 Q0 d1 1 2.0 x\n")
    ds = load_dataset(str(data))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")

    def fps(text: str) -> tuple:
        spec = SystemSpec.parse(text)
        return (stage_fingerprint(spec.first, ds, DEFAULT_MODELS, first=True),
                stage_fingerprint(spec.reranker, ds, DEFAULT_MODELS, first=False))

    provided, none = fps("bm25")  # the data set provides a bm25 run: it stands in, so its content counts
    assert provided is not None and none is None
    assert fps("run:bm25")[0] == provided
    with_model = fps(f"run:bm25+icr:{model}")[1]
    (data / "runs" / "bm25.trec").write_text("q1 Q0 d2 1 2.0 x\n")
    (model / "config.json").write_text('{"a": 1}')
    ds = load_dataset(str(data))
    assert fps("bm25")[0] != provided
    assert fps(f"run:bm25+icr:{model}")[1] != with_model
    assert fps("run:nope") == (None, None)  # not a run of the data set: the first stage says so later
