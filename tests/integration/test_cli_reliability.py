"""Issue 19 on the CLI: partial runs, output safety, no NaN and no empty success, messages with file and line.

Each bad input gets one ``error: ...`` line and exit code 2 (or a ``warning: ...`` line with counts), and
output paths are checked before any work.
"""
from __future__ import annotations

import contextlib
import errno
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _error(result, *fragments: str) -> str:
    """The result is exit code 2 with exactly one ``error: ...`` line containing every fragment."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # progress bars may come before it
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def scifact_ids(data_dir: Path) -> tuple[list[str], dict[str, dict[str, int]]]:
    from attnsift.eval.datasets import load_dataset

    ds = load_dataset("scifact")
    return list(ds.queries), ds.qrels


def _write_run(path: Path, qids, qrels) -> Path:
    """A run ranking, for each query, one unjudged document above its judged ones."""
    lines = []
    for q in qids:
        docs = ["4983", *[d for d in sorted(qrels.get(q, {})) if d != "4983"]]
        lines += [f"{q} Q0 {d} {i + 1} {10.0 - i} mine" for i, d in enumerate(docs)]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------- runs (item 2)
def test_partial_run_is_evaluated_on_its_queries_in_rerank_and_evaluate(tmp_path, scifact_ids):
    qids, qrels = scifact_ids
    part = _write_run(tmp_path / "part.trec", qids[:5], qrels)
    ev = runner.invoke(app, ["evaluate", "-d", "scifact", "--run", str(part), "--json"])
    rr = runner.invoke(app, ["rerank", "-d", "scifact", "--run", str(part), "--json"])
    for result in (ev, rr):
        assert _json(result)["num_queries"] == 5
        assert f"covers 5 of the {len(qids)} queries of scifact (test); {len(qids) - 5} have no ranking" in result.stderr
    assert _json(rr)["nDCG@10"] == pytest.approx(_json(ev)["nDCG@10"], abs=1e-12) and _json(ev)["nDCG@10"] > 0.3
    for cmd in ("evaluate", "rerank"):
        _error(_invoke(cmd, "-d", "scifact", "--run", part, "--strict"), "covers 5 of the", "without --strict")


def test_max_queries_selects_from_the_run(tmp_path, scifact_ids):
    qids, qrels = scifact_ids
    full = _write_run(tmp_path / "full.trec", list(reversed(qids)), qrels)  # file order is not data set order
    out = _json(_invoke("rerank", "-d", "scifact", "--run", full, "--max-queries", 2, "--json"))
    assert out["num_queries"] == 2 and "warning" not in runner.invoke(
        app, ["rerank", "-d", "scifact", "--run", str(full), "--max-queries", "2"]).stderr
    part = _write_run(tmp_path / "part.trec", qids[10:15], qrels)
    saved = tmp_path / "out.trec"
    assert _json(_invoke("rerank", "-d", "scifact", "--run", part, "--max-queries", 2, "--save-run", saved,
                         "--json"))["num_queries"] == 2
    assert list(dict.fromkeys(line.split()[0] for line in saved.read_text().splitlines())) == qids[10:12]
    assert _json(_invoke("evaluate", "-d", "scifact", "--run", part, "--max-queries", 3, "--json"))["num_queries"] == 3


# --------------------------------------------------------------------------------------------- empty (item 6)
def test_empty_run_is_an_error_not_nan(tmp_path, data_dir):
    empty = tmp_path / "empty.trec"
    empty.write_text("")
    _error(_invoke("evaluate", "-d", "scifact", "--run", empty, "--json"), "empty", "ranks no query")
    _error(_invoke("rerank", "-d", "scifact", "--run", empty, "--json"), "empty", "ranks no query")


def test_comparison_with_one_common_query_is_valid_json(tmp_path, scifact_ids):
    qids, qrels = scifact_ids
    a = _write_run(tmp_path / "a.trec", qids[:1], qrels)
    b = _write_run(tmp_path / "b.trec", qids[:1], {})
    result = _invoke("evaluate", "-d", "scifact", "--run", a, "--baseline", b, "--json")
    out = _json(result)  # json.loads accepts NaN: check the text too
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    assert out["comparison"]["metrics"]["nDCG@10"]["p"] is None and "at least 2" in out["comparison"]["t_test"]


def _beir(root: Path, corpus: str | bytes, queries: str | bytes, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    for name, text in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


DOCS = "".join(f'{{"_id": "d{i}", "title": "", "text": "text number {i} about apples"}}\n' for i in range(5))
QUERIES = '{"_id": "q1", "text": "apples"}\n{"_id": "q2", "text": "number"}\n'


def test_empty_query_set_is_an_error(tmp_path):
    ds = _beir(tmp_path / "toy", DOCS, "", "")
    for args in (("rerank", "-d", ds, "--json"), ("retrieve", "-d", ds)):
        _error(_invoke(*args), "no queries", "toy")


def test_empty_corpus_is_an_error(tmp_path):
    ds = _beir(tmp_path / "toy", "", QUERIES, "q1\td0\t1\n")
    _error(_invoke("index", "-d", ds, "--out", tmp_path / "idx"), "corpus of toy", "corpus.jsonl", "is empty")
    _error(_invoke("rerank", "-d", ds, "--json"), "corpus of toy", "is empty")
    assert not (tmp_path / "idx").exists()


# --------------------------------------------------------------------------------------------- item 7
def test_qrels_naming_documents_missing_from_the_corpus_warn_with_counts(tmp_path):
    ds = _beir(tmp_path / "toy", DOCS, QUERIES, "q1\td1\t1\nq1\tgone1\t1\nq2\tgone2\t1\nq2\tgone1\t1\n")
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 x\nq2 Q0 d2 1 1.0 x\n")
    for args in (("evaluate", "-d", ds, "--run", run, "--json"), ("rerank", "-d", ds, "--json")):
        result = _invoke(*args)
        assert result.exit_code == 0, result.output
        assert "judge 2 documents (3 judgements) that the corpus" in result.stderr, result.stderr
        assert "['gone1', 'gone2']" in result.stderr


def test_non_utf8_run_names_file_and_line(tmp_path, data_dir):
    run = tmp_path / "bad.trec"
    run.write_bytes(b"1 Q0 4983 1 2.0 x\n1 Q0 \xe94983x 2 1.0 x\n")
    for cmd in ("evaluate", "rerank"):
        _error(_invoke(cmd, "-d", "scifact", "--run", run), f"{run}:2: byte 0xe9", "not UTF-8")


@pytest.mark.parametrize("which", ["corpus.jsonl", "queries.jsonl"])
def test_non_utf8_corpus_or_queries_names_file_and_line(tmp_path, which):
    corpus, queries = DOCS.encode(), QUERIES.encode()
    bad = b'{"_id": "x", "text": "caf\xe9"}\n'
    ds = _beir(tmp_path / "toy", corpus + bad if which == "corpus.jsonl" else corpus,
               queries + bad if which == "queries.jsonl" else queries, "q1\td1\t1\n")
    line = (DOCS if which == "corpus.jsonl" else QUERIES).count("\n") + 1
    _error(_invoke("rerank", "-d", ds, "--json"), f"{which}:{line}")


# --------------------------------------------------------------------------------------------- outputs (item 5)
def test_save_run_paths_are_checked_before_work(tmp_path, monkeypatch):
    import attnsift.eval.datasets as datasets

    def no_work(*a, **k):
        raise AssertionError("the data set was loaded before the output path was checked")

    monkeypatch.setattr(datasets, "load_dataset", no_work)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in ("rerank", "retrieve"):
        _error(_invoke(cmd, "-d", "scifact", "--save-run", tmp_path), f"--save-run {tmp_path} is a folder")
        _error(_invoke(cmd, "-d", "scifact", "--save-run", afile / "sub" / "run.trec"), f"{afile} is a file")
        # As root chmod does not stop writes: /proc is a real folder where no file can be created.
        _error(_invoke(cmd, "-d", "scifact", "--save-run", "/proc/attnsift-test/run.trec"), "cannot create files in /proc")


def test_read_only_folder_by_permission(tmp_path, monkeypatch):
    import attnsift.cli.common as common

    monkeypatch.setattr(common.os, "access", lambda path, mode: Path(path) != tmp_path)
    _error(_invoke("retrieve", "-d", "scifact", "--save-run", tmp_path / "run.trec"),
           f"cannot create files in {tmp_path} (permission denied)")


def test_too_little_free_space_is_found_before_work(tmp_path, data_dir, monkeypatch):
    import shutil

    import attnsift.cli.common as common

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(common.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    _error(_invoke("retrieve", "-d", "scifact", "--save-run", tmp_path / "run.trec"), "only 1000 B is free")
    _error(_invoke("index", "-d", "scifact", "--out", tmp_path / "idx"), "only 1000 B is free")
    assert not (tmp_path / "run.trec").exists() and not (tmp_path / "idx").exists()


def test_full_disk_while_writing_is_one_line(tmp_path, scifact_ids, monkeypatch):
    import attnsift.trec as trec

    @contextlib.contextmanager
    def full_disk(path, mode="w"):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
        yield  # pragma: no cover

    monkeypatch.setattr(trec, "atomic_file", full_disk)
    qids, qrels = scifact_ids
    run = _write_run(tmp_path / "r.trec", qids[:3], qrels)
    _error(_invoke("rerank", "-d", "scifact", "--run", run, "--save-run", tmp_path / "out.trec"),
           f"{tmp_path / 'out.trec'}: No space left on device (the disk is full")


def test_folder_outputs_are_checked_before_work(tmp_path, monkeypatch):
    import attnsift.eval.datasets as datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    afile = tmp_path / "afile"
    afile.write_text("x")
    _error(_invoke("index", "-d", "scifact", "--out", afile / "idx"), f"{afile} is a file")
    _error(_invoke("explain", "-d", "scifact", "--query-id", "1", "--out", afile), "--out", "a folder is expected")
    _error(_invoke("train", "blockrank", "--out", afile), "--out", "a folder is expected")
    _error(_invoke("bench", "quality", "--dataset", "scifact", "--systems", "bm25", "--out", afile),
           "a folder is expected")
    _error(_invoke("analyze", "heads", "--out", afile / "x.json"), f"{afile} is a file")
    (tmp_path / "p.json").mkdir()
    _error(_invoke("analyze", "heads", "--out", tmp_path / "p.json"), "is a folder")


# --------------------------------------------------------------------------------------------- late checks
def test_bad_bench_spec_fails_before_any_work(tmp_path, data_dir):
    out = tmp_path / "bench"
    _error(_invoke("bench", "quality", "--dataset", "scifact", "--systems", "bm25,bm25+icr[nonsense=1]",
                   "--out", out), "bm25+icr[nonsense=1]", "nonsense")
    _error(_invoke("bench", "quality", "--dataset", "scifact", "--systems", "bm25[k1=abc]", "--out", out), "k1")
    assert not out.exists()  # not even the first system's first stage ran


def test_run_name_is_checked_before_the_model_loads(tmp_path, data_dir, monkeypatch):
    import attnsift.registry as registry

    # The model is named (checked without loading) before the data set is read; it loads only after --run is read.
    _error(_invoke("rerank", "-d", "dl19", "--run", "no-such-run", "--reranker", "icr", "--model", tmp_path / "nomodel"),
           "nomodel", "does not exist")
    monkeypatch.setattr(registry, "build_reranker", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    _error(_invoke("rerank", "-d", "dl19", "--run", "no-such-run", "--reranker", "icr", "--model", "smollm2-135m"),
           "no provided run 'no-such-run'")


def test_os_error_is_one_line_and_verbose_logs_the_traceback(caplog):
    import logging

    import typer

    from attnsift.cli.common import guard

    @guard
    def writes():
        raise PermissionError(errno.EACCES, "Permission denied", "/data/out.trec")

    with caplog.at_level(logging.INFO, logger="attnsift"), pytest.raises(typer.Exit) as info:
        writes()
    assert info.value.exit_code == 2
    assert caplog.records[-1].exc_info is not None  # shown with -v (INFO), hidden otherwise


def test_an_index_searched_for_another_corpus_is_refused_unless_forced(data_dir, tmp_path, caplog):
    """Issue 19 item 4: today's code exits 0 with nDCG 0.0 (SciFact index, NFCorpus queries)."""
    out = tmp_path / "scifact-index"
    assert _invoke("index", "-d", "scifact", "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus"]["dataset"] == "scifact" and manifest["corpus"]["fingerprint"]
    _error(_invoke("retrieve", "--index", out, "-d", "nfcorpus", "--max-queries", "2"),
           "built on data set 'scifact'", "not on data set 'nfcorpus'", "--force")
    forced = _invoke("retrieve", "--index", out, "-d", "nfcorpus", "--max-queries", "2", "--force")
    assert forced.exit_code == 0 and "using it anyway" in caplog.text
    same = _json(_invoke("retrieve", "--index", out, "-d", "scifact", "--max-queries", "2"))
    assert same["queries"] == 2
