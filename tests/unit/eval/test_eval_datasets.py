"""Data sets: BEIR folders, aliases, Corpus streaming, parser errors, the offline error path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnsift.errors import DataFormatError, DatasetError
from attnsift.eval.datasets import Corpus, Dataset, list_datasets, load_dataset, read_queries
from attnsift.types import Document, Query


def _beir(root: Path, docs=None, queries=None, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n",
          runs: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if docs is None:
        docs = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": "two"},
                {"_id": "d3", "text": "three"}]
    if queries is None:
        queries = [{"_id": "q2", "text": "second"}, {"_id": "q9", "text": "not judged"}, {"_id": "q1", "text": "first"}]
    (root / "corpus.jsonl").write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join((q if isinstance(q, str) else json.dumps(q)) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(qrels)
    for name, text in (runs or {}).items():
        (root / "runs").mkdir(exist_ok=True)
        (root / "runs" / name).write_text(text)
    return root


# ------------------------------------------------------------------------------------------ folders


@pytest.fixture
def fp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))


def test_dataset_fingerprints_follow_file_content(tmp_path, fp_cache):
    import hashlib

    root = _beir(tmp_path / "a")
    fps = load_dataset(str(root)).fingerprints()
    assert set(fps) == {"name", "split", "corpus", "queries", "qrels"}
    assert (fps["name"], fps["split"]) == ("a", "test")
    assert fps["corpus"] == hashlib.sha256((root / "corpus.jsonl").read_bytes()).hexdigest()
    assert fps["qrels"] == hashlib.sha256((root / "qrels" / "test.tsv").read_bytes()).hexdigest()
    # Same bytes elsewhere: same content fingerprints.
    other = load_dataset(str(_beir(tmp_path / "b" / "a"))).fingerprints()
    assert other == fps
    # Qrels changed in place (same size, so only the content tells): the qrels fingerprint changes.
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td2\t1\n")
    st = (root / "qrels" / "test.tsv").stat()
    os.utime(root / "qrels" / "test.tsv", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = load_dataset(str(root)).fingerprints()
    assert changed["qrels"] != fps["qrels"] and changed["corpus"] == fps["corpus"]


def test_subset_keeps_the_parent_fingerprints(tmp_path, fp_cache):
    ds = load_dataset(str(_beir(tmp_path / "a")))
    assert ds.subset(max_queries=1).fingerprints() == ds.fingerprints()
    mem = Dataset(name="m", corpus=Corpus.from_documents([Document("d1", "one")]),
                  queries={"q1": Query("q1", "a"), "q2": Query("q2", "b")}, qrels={"q1": {"d1": 1}, "q2": {"d1": 0}})
    assert mem.subset(["q2"]).fingerprints() == mem.fingerprints()
    other = Dataset(name="m", corpus=mem.corpus, queries={"q1": Query("q1", "a"), "q2": Query("q2", "B")},
                    qrels=mem.qrels)
    assert other.fingerprints()["queries"] != mem.fingerprints()["queries"]
    assert other.fingerprints()["qrels"] == mem.fingerprints()["qrels"]


def test_corpus_fingerprint_in_memory_and_other_stores():
    from attnsift.eval.datasets import MemoryStore
    from attnsift.fingerprint import documents_fingerprint

    docs = [Document("d1", "one", "T"), Document("d2", "two")]
    assert Corpus.from_documents(docs).fingerprint() == documents_fingerprint(docs)
    assert Corpus.from_documents(docs[:1]).fingerprint() != documents_fingerprint(docs)

    class Plain(MemoryStore):  # a store without its own fingerprint: the documents are hashed
        fingerprint = None

    assert Corpus(Plain({d.id: d for d in docs})).fingerprint() == documents_fingerprint(docs)

def test_load_folder_by_path_and_by_name(tmp_path):
    folder = _beir(tmp_path / "toy", runs={"bm25_flat.top10.trec": "q1 Q0 d1 1 2.0 x\nq1 Q0 d3 2 1.0 x\n"})
    ds = load_dataset(str(folder))
    # queries in file order, only those with qrels
    assert list(ds.queries) == ["q2", "q1"]
    assert ds.qrels == {"q2": {"d2": 1}, "q1": {"d1": 1}}
    assert ds.rel_level == 1 and ds.source == f"local:{folder}"
    assert ds.runs == {"bm25_flat": folder / "runs" / "bm25_flat.top10.trec"}
    assert ds.corpus["d2"].title is None  # "" -> None
    assert ds.corpus["d1"].title == "T1"
    assert len(ds.corpus) == 3
    run = ds.load_run("bm25_flat")
    assert run["q1"].query.text == "first" and run["q1"].doc_ids == ["d1", "d3"]
    with pytest.raises(ValueError, match="available: bm25_flat"):
        ds.load_run("splade")
    by_name = load_dataset("toy", data_dir=tmp_path)
    assert list(by_name.queries) == ["q2", "q1"]


def test_missing_files_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSIFT_DATA", str(tmp_path))
    _beir(tmp_path / "toy")
    with pytest.raises(DatasetError, match=r"qrels/dev\.tsv.*splits present: test"):
        load_dataset("toy", split="dev")
    (tmp_path / "toy" / "queries.jsonl").unlink()
    with pytest.raises(DatasetError, match="missing queries.jsonl"):
        load_dataset("toy")
    with pytest.raises(DatasetError) as ei:
        load_dataset("no-such-set")
    assert "scifact, nfcorpus, dl19, msmarco" in str(ei.value) and "local folders" in str(ei.value)
    with pytest.raises(DatasetError, match="no data set folder at"):
        load_dataset(str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="is a file"):
        load_dataset(str(tmp_path / "toy" / "corpus.jsonl"))
    with pytest.raises(DatasetError, match="has no split 'validation'"):
        load_dataset("scifact", split="validation", data_dir=tmp_path)


def test_subset_is_deterministic_and_restricts_runs(tmp_path):
    qs = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(10)]
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td1\t1\n" for i in range(10))
    run = "".join(f"q{i} Q0 d1 1 1.0 x\n" for i in range(10))
    ds = load_dataset(str(_beir(tmp_path / "t", queries=qs, qrels=qrels, runs={"r.trec": run})))
    a, b = ds.subset(3), ds.subset(max_queries=3)
    assert list(a.queries) == list(b.queries) == ["q0", "q1", "q2"]
    assert set(a.qrels) == {"q0", "q1", "q2"}
    assert list(a.load_run("r")) == ["q0", "q1", "q2"]
    c = ds.subset(["q7", "q3"])
    assert list(c.queries) == ["q3", "q7"]  # data set order, not argument order
    assert len(ds.queries) == 10  # original untouched
    with pytest.raises(ValueError, match=r"\['nope'\] are not in data set"):
        ds.subset(["nope"])
    with pytest.raises(ValueError, match="either query_ids"):
        ds.subset()
    with pytest.raises(ValueError, match="positive"):
        ds.subset(0)


# ------------------------------------------------------------------------------------------ parsers

@pytest.mark.parametrize(
    "bad, needle",
    [
        ('{"_id": "x", "text": ', "not valid JSON"),
        ('{"text": "no id"}', "'_id' is missing"),
        ('{"_id": "x", "title": "t"}', "'text' is missing"),
        ('["a list"]', "expected a JSON object"),
        ('{"_id": "has space", "text": "t"}', "whitespace"),
    ],
)
def test_corpus_line_errors_name_file_and_line(tmp_path, bad, needle):
    p = tmp_path / "corpus.jsonl"
    p.write_text(json.dumps({"_id": "ok", "text": "fine"}) + "\n\n" + bad + "\n")
    corpus = Corpus.from_jsonl(p)
    with pytest.raises(DataFormatError) as ei:
        list(corpus.iter_documents())
    assert f"{p}:3" in str(ei.value) and needle in str(ei.value)


def test_corpus_duplicate_ids(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text("".join(json.dumps({"_id": i, "text": "t"}) + "\n" for i in ["a", "b", "a"]))
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:3: duplicate document id 'a' \(first at line 1\)"):
        Corpus.from_jsonl(p)["a"]
    with pytest.raises(DataFormatError, match="duplicate document id 'a'"):
        Corpus.from_jsonl(p).subset(["a"])
    with pytest.raises(DataFormatError, match="duplicate document id 'a'"):
        Corpus.from_documents([Document("a", "x"), Document("a", "y")])


@pytest.mark.parametrize(
    "line, needle",
    [
        ('{"_id": "q1", "text": "   "}', "empty text"),
        ('{"_id": "q1"}', "'text' is missing"),
        ('{"_id": "q1", "text": "again"}', "duplicate query id 'q1' (first at line 1)"),
        ("not json", "not valid JSON"),
    ],
)
def test_query_errors_name_file_and_line(tmp_path, line, needle):
    p = tmp_path / "queries.jsonl"
    p.write_text(json.dumps({"_id": "q1", "text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(DataFormatError) as ei:
        read_queries(p)
    assert f"{p}:2" in str(ei.value) and needle in str(ei.value)


def test_empty_query_in_dataset(tmp_path):
    folder = _beir(tmp_path / "t", queries=[{"_id": "q1", "text": "ok"}, {"_id": "q2", "text": ""}])
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:2: query 'q2' has empty text"):
        load_dataset(str(folder))


# ------------------------------------------------------------------------------------------ corpus

def test_corpus_subset_streams_without_loading(tmp_path):
    p = tmp_path / "corpus.jsonl"
    with open(p, "w") as fh:
        for i in range(2000):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"text {i}"}) + "\n")
        # an id with an escaped quote defeats the fast regex and must still be found
        fh.write(json.dumps({"_id": 'q"x', "text": "odd"}) + "\n")
    corpus = Corpus.from_jsonl(p)
    got = corpus.subset(["d1999", "d5", 'q"x', "missing"])
    assert list(got) == ["d5", "d1999", 'q"x']  # corpus order; missing ids left out
    assert got["d5"] == Document("d5", "text 5")
    assert not corpus.store.loaded  # nothing loaded whole
    assert len(corpus) == 2001 and not corpus.store.loaded
    assert sum(1 for _ in corpus.iter_documents()) == 2001
    assert "d7" in corpus and "nope" not in corpus  # random access loads it now
    assert corpus.store.loaded and corpus.get("nope") is None


def test_corpus_from_documents_mapping():
    c = Corpus.from_documents([Document("a", "x", "t"), Document("b", "y")])
    assert len(c) == 2 and list(c) == ["a", "b"] and c["a"].title == "t"
    assert c.subset(["b"]) == {"b": Document("b", "y")}
    with pytest.raises(TypeError, match="Document objects"):
        Corpus.from_documents(["a"])
    with pytest.raises(DatasetError, match="does not exist"):
        Corpus.from_jsonl("/nonexistent/corpus.jsonl")
    with pytest.raises(TypeError, match="DocumentStore"):
        Corpus({"a": Document("a", "x")})


# ------------------------------------------------------------------------------------------ loaders

class _TsvLoader:
    """A toy folder format: docs.tsv (id, text) and judged.tsv (qid, query text, doc id, grade)."""

    name = "toy-tsv"

    def matches(self, path):
        return (path / "docs.tsv").is_file()

    def load(self, path, split, info):
        from attnsift.eval.datasets import Dataset

        docs = [Document(*line.split("\t")) for line in (path / "docs.tsv").read_text().splitlines()]
        queries, qrels = {}, {}
        for line in (path / "judged.tsv").read_text().splitlines():
            qid, text, did, grade = line.split("\t")
            queries[qid] = Query(qid, text)
            qrels.setdefault(qid, {})[did] = int(grade)
        return Dataset(info.name, Corpus.from_documents(docs), queries, qrels, rel_level=info.rel_level,
                       source=f"local:{path}", split=split)

    def summary(self, path, split="test"):
        return {"available": True, "docs": len((path / "docs.tsv").read_text().splitlines()), "queries": None}


def test_a_new_folder_format_is_one_registered_loader(tmp_path, monkeypatch):
    from attnsift.eval.datasets import base, register_loader, registered_loaders

    monkeypatch.setattr(base, "_LOADERS", list(base._LOADERS))  # leave the global registry as it was
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "docs.tsv").write_text("d1\tfirst text\nd2\tsecond text\n")
    (folder / "judged.tsv").write_text("q1\ta question\td2\t1\n")
    with pytest.raises(DatasetError, match="missing corpus.jsonl"):  # BEIR reports what it lacks
        load_dataset("toy", data_dir=tmp_path)
    loader = register_loader(_TsvLoader())
    assert registered_loaders()[0] is loader
    ds = load_dataset("toy", data_dir=tmp_path)
    assert ds.corpus["d2"].text == "second text" and ds.qrels == {"q1": {"d2": 1}}
    assert [r["docs"] for r in list_datasets(tmp_path) if r["name"] == "toy"] == [2]
    with pytest.raises(TypeError, match="DatasetLoader"):
        register_loader(object())


# ------------------------------------------------------------------------------------------ real data

def _need(data_dir: Path, folder: str) -> Path:
    p = data_dir / folder
    if not (p / "corpus.jsonl").is_file():
        pytest.skip(f"{p} is absent: place the shared BEIR folder there (see ../shared/data/README.md)")
    return p


def test_aliases_resolve_to_local_folders(data_dir):
    _need(data_dir, "trec-dl19-passage")
    dl19 = load_dataset("dl19", data_dir=data_dir)
    assert dl19.name == "dl19" and dl19.rel_level == 2
    assert dl19.source == f"local:{data_dir / 'trec-dl19-passage'}"
    assert len(dl19.queries) == 43 and sum(len(v) for v in dl19.qrels.values()) == 9260
    assert set(dl19.runs) == {"bm25_flat", "splade_pp_ed"}
    assert dl19.load_run("bm25").name == "bm25_flat"
    run = dl19.load_run("splade")
    assert len(run) == 43 and all(len(r) == 100 for r in run.values())
    assert next(iter(run.values())).query.text == dl19.queries[next(iter(run))].text


def test_nfcorpus_keeps_only_split_queries(data_dir):
    _need(data_dir, "nfcorpus")
    test = load_dataset("nfcorpus", data_dir=data_dir)
    assert len(test.queries) == 323 and set(test.queries) == set(test.qrels)
    assert sum(len(v) for v in test.qrels.values()) == 12334
    dev = load_dataset("nfcorpus", split="dev", data_dir=data_dir)
    assert set(dev.queries).isdisjoint(test.queries)


def test_list_datasets(data_dir):
    _need(data_dir, "scifact")
    rows = {r["name"]: r for r in list_datasets(data_dir)}
    assert {"scifact", "nfcorpus", "dl19", "msmarco"} <= set(rows)
    assert rows["scifact"]["available"] and rows["scifact"]["docs"] == 5183 and rows["scifact"]["queries"] == 300
    assert rows["msmarco"]["path"] is None or rows["msmarco"]["available"]


# ------------------------------------------------------------------------------------------ offline

def test_offline_error_is_fast_and_says_where_to_put_files(tmp_path):
    # ir_datasets fixes its cache folder at import time, so run in a fresh interpreter.
    code = textwrap.dedent(
        """
        import time
        import sys
        sys.prefix = sys.argv[1]  # no install-time data folder: the default under $ATTNSIFT_CACHE
        from attnsift.eval.datasets import load_dataset
        t = time.perf_counter()
        try:
            load_dataset("scifact")
        except Exception as e:
            print(type(e).__name__); print(e)
        print("SECONDS", time.perf_counter() - t)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "ATTNSIFT_DATA"}
    env.update(IR_DATASETS_HOME=str(tmp_path / "irds"), ATTNSIFT_OFFLINE="1", ATTNSIFT_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "no-venv")], env=env, capture_output=True,
                         text=True, timeout=120).stdout
    assert out.startswith("DatasetError"), out
    assert f"{tmp_path / 'cache' / 'data' / 'scifact'}/ (corpus.jsonl, queries.jsonl, qrels/test.tsv)" in out
    assert "export ATTNSIFT_DATA=" in out  # how to change the folder
    assert str(tmp_path / "irds" / "beir" / "scifact" / "source.zip") in out
    assert "scifact.zip" in out  # the download address
    assert "internet" in out
    assert float(out.rsplit("SECONDS", 1)[1]) < 10


def test_ir_datasets_path_reads_a_local_source_zip(tmp_path, data_dir):
    # ir_datasets uses a BEIR zip placed at $IR_DATASETS_HOME/beir/<name>/source.zip as-is (no download).
    import zipfile

    src = _need(data_dir, "scifact")
    home = tmp_path / "irds"
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w") as zf:
        for rel in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
            zf.write(src / rel, f"scifact/{rel}")
    code = textwrap.dedent(
        """
        from attnsift.eval.datasets import load_dataset
        ds = load_dataset("beir/scifact/test")
        docs = ds.corpus.subset(["4983", "nope"])
        print(ds.source, ds.rel_level, len(ds.queries), sum(map(len, ds.qrels.values())), list(docs))
        print(ds.corpus["4983"].title[:30])
        from attnsift.fingerprint import combine
        print(ds.corpus.fingerprint() != combine("ir_datasets", "beir/scifact/test", None))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "ATTNSIFT_DATA"}
    env.update(IR_DATASETS_HOME=str(home), ATTNSIFT_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[0] == "ir_datasets:beir/scifact/test 1 300 339 ['4983']"
    assert lines[1] == "Microstructural development of"
    assert lines[2] == "True"  # the source zip is part of the corpus fingerprint


def test_a_known_data_sets_folder_loads_as_that_data_set(data_dir):
    """`trec-dl19-passage` by folder name or path is DL19: grades 0-3 with relevant >= 2 and the provided
    runs' short names; before, it was a plain folder (rel_level 1, no 'bm25' run, so `--retriever bm25`
    silently ran BM25 over the 7K-passage pool instead of the provided run)."""
    from attnsift.eval.datasets import load_dataset

    alias = load_dataset("dl19")
    for name in ("trec-dl19-passage", str(data_dir / "trec-dl19-passage")):
        ds = load_dataset(name)
        assert (ds.name, ds.rel_level, ds.run_aliases) == (alias.name, alias.rel_level, alias.run_aliases)
        assert ds.rel_level == 2 and ds.run_aliases["bm25"] == "bm25_flat"
