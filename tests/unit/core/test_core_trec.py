"""TREC run / qrels I/O: round trips, every parser error with file:line, atomic writes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from attnsift.errors import DataFormatError
from attnsift.trec import read_qrels, read_run, write_qrels, write_run
from attnsift.types import Candidate, Query, Ranking, Run


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _run() -> Run:
    q1, q2 = Query("q1", "first query"), Query("q2", "second query")
    return Run(
        [
            Ranking(q1, (Candidate("d1", 1 / 3), Candidate("d2", 0.1 + 0.2), Candidate("d3", -1e-300))),
            Ranking(q2, (Candidate("d9", 12.5), Candidate("d1", 12.5))),  # tie: broken by doc id
        ],
        name="sys",
    )


def test_run_round_trip_keeps_order_scores_and_queries(tmp_path):
    run = _run()
    path = write_run(run, tmp_path / "out" / "run.trec", tag="mytag")
    lines = path.read_text().splitlines()
    assert lines[0].split()[3] == "1" and lines[2].split()[3] == "3"
    assert all(line.split()[5] == "mytag" for line in lines)
    queries = {r.query.id: r.query for r in run.values()}
    back = read_run(path, queries=queries)
    assert back.name == "mytag"
    assert list(back) == list(run)
    for qid in run:
        assert back[qid].doc_ids == run[qid].doc_ids
        assert [c.score for c in back[qid]] == [c.score for c in run[qid]]  # exact floats (repr)
        assert back[qid].query == run[qid].query
    # Run.to_trec / from_trec go through the same functions
    p2 = write_run(run, tmp_path / "r2.trec")
    assert read_run(p2).to_dict() == run.to_dict()


def test_read_run_without_queries_invents_no_text(tmp_path):
    p = _write(tmp_path / "r.trec", "7 Q0 a 1 2.0 t\n7 Q0 b 2 1.0 t\n")
    run = read_run(p, name="given")
    assert run.name == "given"
    assert run["7"].query == Query("7") and run["7"].query.text is None
    assert run["7"].doc_ids == ["a", "b"]
    # what only evaluates a run keeps working
    assert run.to_dict() == {"7": {"a": 2.0, "b": 1.0}}
    assert Run.from_dict(run.to_dict())["7"].query.text is None


@pytest.mark.parametrize(
    "content, bad_line, needle",
    [
        ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 0.5\n", 2, "6 whitespace-separated fields"),
        ("q1 Q0 d1 one 1.0 t\n", 1, "rank must be an integer"),
        ("\nq1 Q0 d1 1 1.0 t\n\nq1 Q0 d2 2 high t\n", 4, "score must be a number"),
        ("q1 Q0 d1 1 nan t\n", 1, "NaN"),
        ("q1 Q0 d1 1 1.0 t\nq1 Q0 d1 2 0.5 t\n", 2, "listed twice"),
    ],
)
def test_read_run_errors_name_file_and_line(tmp_path, content, bad_line, needle):
    p = _write(tmp_path / "bad.trec", content)
    with pytest.raises(DataFormatError) as ei:
        read_run(p)
    msg = str(ei.value)
    assert f"{p}:{bad_line}" in msg and needle in msg


def test_read_run_unknown_query_is_an_error_unless_skipped(tmp_path):
    p = _write(tmp_path / "r.trec", "q1 Q0 d1 1 1.0 t\nzz Q0 d1 1 1.0 t\n")
    queries = {"q1": Query("q1", "hello")}
    with pytest.raises(DataFormatError, match=r"r\.trec:2: query id 'zz'"):
        read_run(p, queries=queries)
    run = read_run(p, queries=queries, skip_unknown=True)
    assert list(run) == ["q1"] and run["q1"].query.text == "hello"


def test_read_run_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_run(tmp_path / "nope.trec")


def test_write_run_failure_leaves_no_file(tmp_path):
    class Exploding(dict):
        def items(self):
            yield "q1", _run()["q1"]
            raise RuntimeError("disk full midway")

    target = tmp_path / "run.trec"
    with pytest.raises(RuntimeError, match="midway"):
        write_run(Exploding(), target)
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind either


def test_write_run_failure_keeps_previous_file(tmp_path):
    target = write_run(_run(), tmp_path / "run.trec")
    before = target.read_text()
    with pytest.raises(TypeError):
        write_run({"q1": "not a ranking"}, target)
    assert target.read_text() == before


def test_write_run_rejects_bad_tag(tmp_path):
    with pytest.raises(ValueError, match="tag"):
        write_run(_run(), tmp_path / "r.trec", tag="two words")


def test_qrels_beir_and_trec_formats(tmp_path):
    beir = _write(tmp_path / "q.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    trec = _write(tmp_path / "q.txt", "q1 0 d1 1\nq1 0 d2 0\nq2 0 d3 2\n")
    want = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert read_qrels(beir) == want
    assert read_qrels(trec) == want
    for fmt in ("trec", "beir"):
        assert read_qrels(write_qrels(want, tmp_path / f"w.{fmt}", format=fmt)) == want


@pytest.mark.parametrize(
    "content, bad_line, needle",
    [
        ("q1 0 d1 1\nq1 d2\n", 2, "qrels line needs 4 fields"),
        ("query-id\tcorpus-id\tscore\nq1\td1\tyes\n", 2, "relevance grade must be an integer"),
        ("q1 0 d1 1.5\n", 1, "relevance grade must be an integer"),
        ("q1 0 d1 1\nq1 0 d1 2\n", 2, "judged twice"),
    ],
)
def test_read_qrels_errors_name_file_and_line(tmp_path, content, bad_line, needle):
    p = _write(tmp_path / "bad.qrels", content)
    with pytest.raises(DataFormatError) as ei:
        read_qrels(p)
    assert f"{p}:{bad_line}" in str(ei.value) and needle in str(ei.value)


@pytest.mark.parametrize("reader, good", [
    (read_run, "q1 Q0 d1 1 2.5 sys\n"),
    (read_qrels, "q1 0 d1 1\n"),
])
def test_non_utf8_byte_names_file_and_line(tmp_path, reader, good):
    path = tmp_path / "bad.txt"
    path.write_bytes(good.encode() + good.replace("q1", "q2").encode() + good.encode().replace(b"d1", b"d\xff1"))
    with pytest.raises(DataFormatError, match=r"bad\.txt:3: byte 0xff at column \d+ is not UTF-8"):
        reader(path)
