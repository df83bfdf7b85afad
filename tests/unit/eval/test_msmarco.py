"""The MS MARCO passage loader: official files (plain, .gz, .tar.gz), the offset index, runs, bad files."""
from __future__ import annotations

import gzip
import io
import random
import tarfile
import time
from pathlib import Path

import pytest

from attnsift.errors import DataFormatError, DatasetError
from attnsift.eval.datasets import list_datasets, load_dataset
from attnsift.eval.datasets.msmarco import MsMarcoStore, read_top1000
from attnsift.eval.datasets.msmarco_store import build_offsets, collection_fingerprint
from attnsift.types import Query

PASSAGES = {0: "The cat sat on the mat.", 1: "Dogs bark at night.", 2: "Quantum chromodynamics explained simply.",
            3: "Café crème, naïve résumé.", 4: "Paris is the capital of France.", 5: "Whales are mammals."}
QUERIES = {"101": "what do dogs do at night", "102": "capital of france", "103": "are whales fish", "104": "unjudged"}
QRELS = [("101", 1), ("102", 4), ("103", 5)]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTNSIFT_OFFLINE", "1")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        "collection.tsv": "".join(f"{p}\t{t}\n" for p, t in PASSAGES.items()).encode(),
        "queries.dev.small.tsv": "".join(f"{q}\t{t}\n" for q, t in QUERIES.items()).encode(),
        "qrels.dev.small.tsv": "".join(f"{q}\t0\t{p}\t1\n" for q, p in QRELS).encode(),
        "top1000.dev.tsv": "".join(f"{q}\t{p}\t{QUERIES[q]}\t{PASSAGES[p]}\n"
                                   for q in ("102", "101") for p in (3, 4, 1, 0)).encode(),
    }


def _write(folder: Path, names=None, **override: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {**_files(folder), **override}
    for name, data in files.items():
        if names is None or name in names:
            (folder / name).write_bytes(data)
    return folder


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_plain_files(tmp_path):
    _write(tmp_path / "msmarco-passage")
    ds = load_dataset("msmarco", data_dir=tmp_path)
    assert ds.name == "msmarco" and ds.split == "dev.small" and ds.rel_level == 1
    assert list(ds.queries) == ["101", "102", "103"]  # judged only, file order
    assert ds.qrels == {"101": {"1": 1}, "102": {"4": 1}, "103": {"5": 1}}
    assert len(ds.corpus) == 6 and ds.corpus["3"].text == PASSAGES[3]
    assert [d.id for d in ds.corpus.iter_documents()] == [str(p) for p in PASSAGES]
    run = ds.load_run("top1000")
    assert list(run) == ["102", "101"]  # file order of queries
    assert run["102"].doc_ids == ["3", "4", "1", "0"]  # file order is rank order
    assert [c.score for c in run["102"].candidates] == [4.0, 3.0, 2.0, 1.0]
    assert list(ds.subset(max_queries=1).load_run("top1000")) == ["101"]
    assert load_dataset("msmarco-dev-small", data_dir=tmp_path).queries == ds.queries


def test_get_subset_count_and_the_cached_index(tmp_path):
    folder = _write(tmp_path / "msmarco-passage")
    store = MsMarcoStore(folder)
    assert store.known_len is None
    assert store.get("2").text == PASSAGES[2] and store.get("9") is None
    assert store.get("x") is None and store.get("02") is None and store.get("-1") is None
    assert list(store.subset({"5", "0", "3", "77", "abc"})) == ["0", "3", "5"]  # store order, absent left out
    assert store.count() == 6
    assert list((tmp_path / "cache" / "msmarco-passage" / "offsets").iterdir())
    again = MsMarcoStore(folder)  # the index is read from the cache, so the count is known at once
    assert again.known_len == 6
    rows = {r["name"]: r for r in list_datasets(data_dir=tmp_path)}
    assert rows["msmarco"]["available"] and rows["msmarco"]["docs"] == 6 and rows["msmarco"]["queries"] == 3
    assert not rows["msmarco-dev"]["available"] and not rows["msmarco-dl19"]["available"]


def test_subset_does_not_scan_the_collection(tmp_path, monkeypatch):
    folder = tmp_path / "msmarco-passage"
    folder.mkdir()
    n = 200_000
    with open(folder / "collection.tsv", "w") as fh:
        fh.writelines(f"{i}\tpassage number {i} about topic{i % 97}\n" for i in range(n))
    store = MsMarcoStore(folder)
    t = time.perf_counter()
    assert store.count() == n
    build_s = time.perf_counter() - t
    monkeypatch.setattr(MsMarcoStore, "iter_documents", lambda self: pytest.fail("subset must not stream"))
    ids = {str(i) for i in random.Random(0).sample(range(n), 2000)}
    t = time.perf_counter()
    got = MsMarcoStore(folder).subset(ids)
    subset_s = time.perf_counter() - t
    assert set(got) == ids and list(got) == sorted(ids, key=int)
    assert all(d.text == f"passage number {d.id} about topic{int(d.id) % 97}" for d in got.values())
    assert subset_s < 2.0 and build_s < 10.0, (build_s, subset_s)


def test_sparse_pids_and_crlf(tmp_path):
    folder = tmp_path / "msmarco-passage"
    _write(folder, {"collection.tsv"}, **{"collection.tsv": b"7\tseven\r\n3\tthree\r\n\r\n100\thundred"})
    store = MsMarcoStore(folder)
    assert store.count() == 3 and store.get("100").text == "hundred" and store.get("3").text == "three"
    assert store.get("4") is None and list(store.subset({"100", "7"})) == ["7", "100"]
    assert [(d.id, d.text) for d in store.iter_documents()] == [("7", "seven"), ("3", "three"), ("100", "hundred")]


def test_tar_gz_archives_are_read(tmp_path):
    src = _files(tmp_path)
    folder = tmp_path / "data" / "msmarco-passage"
    folder.mkdir(parents=True)
    _tar(folder / "collection.tar.gz", {"collection.tsv": src["collection.tsv"]})
    _tar(folder / "queries.tar.gz", {"queries.dev.small.tsv": src["queries.dev.small.tsv"],
                                     "qrels.dev.small.tsv": src["qrels.dev.small.tsv"]})
    _tar(folder / "top1000.dev.tar.gz", {"top1000.dev": src["top1000.dev.tsv"]})
    ds = load_dataset("msmarco", data_dir=tmp_path / "data")
    assert list(ds.queries) == ["101", "102", "103"]
    assert not (folder / "top1000.dev").exists()  # the run archive is streamed, not unpacked
    assert ds.load_run("top1000")["101"].doc_ids == ["3", "4", "1", "0"]
    assert ds.corpus["4"].text == PASSAGES[4] and len(ds.corpus) == 6
    assert (folder / "collection.tsv").read_bytes() == src["collection.tsv"]  # unpacked once, into the folder
    plain = load_dataset("msmarco", data_dir=_write(tmp_path / "plain" / "msmarco-passage").parent)
    assert ds.corpus.fingerprint() == plain.corpus.fingerprint()


def test_collectionandqueries_archive(tmp_path):
    src = _files(tmp_path)
    folder = tmp_path / "msmarco-passage"
    folder.mkdir()
    _tar(folder / "collectionandqueries.tar.gz", {f"x/{n}": src[n] for n in ("collection.tsv", "queries.dev.small.tsv",
                                                                            "qrels.dev.small.tsv")})
    ds = load_dataset(str(folder))
    assert ds.name == "msmarco" and len(ds.queries) == 3 and ds.corpus["0"].text == PASSAGES[0] and ds.runs == {}


def test_trec_dl_over_the_full_collection(tmp_path):
    folder = _write(tmp_path / "msmarco-passage")
    with gzip.open(folder / "msmarco-test2019-queries.tsv.gz", "wb") as fh:
        fh.write(b"501\tcapital city of france\n502\tnot judged here\n")
    (folder / "2019qrels-pass.txt").write_text("501 0 4 3\n501 0 0 1\n")
    ds = load_dataset("msmarco-dl19", data_dir=tmp_path)
    assert ds.rel_level == 2 and ds.split == "dl19" and list(ds.queries) == ["501"]
    assert ds.qrels == {"501": {"4": 3, "0": 1}} and "top1000" not in ds.runs
    with pytest.raises(DatasetError, match=r"msmarco-test2020-queries\.tsv"):
        load_dataset("msmarco-dl20", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="no split 'train'"):
        load_dataset("msmarco", split="train", data_dir=tmp_path)


def test_fingerprint_is_cheap_and_content_keyed(tmp_path):
    folder = _write(tmp_path / "msmarco-passage")
    f = folder / "collection.tsv"
    a = collection_fingerprint(f)
    assert len(a) == 64 and a == collection_fingerprint(f)
    f.write_bytes(f.read_bytes().replace(b"cat", b"bat"))  # same size, different content
    assert collection_fingerprint(f) != a


@pytest.mark.parametrize("content, where, what", [
    (b"0\tok\n1 no tab here\n", ":2:", "pid<TAB>text"),
    (b"0\tok\n\nabc\ttext\n", ":3:", "not an integer"),
    (b"0\tok\n007\ttext\n", ":2:", "not an integer"),
    (b"0\ta\n1\tb\n0\tc\n", ":3:", "listed twice"),
])
def test_bad_collection_lines_name_file_and_line(tmp_path, content, where, what):
    f = tmp_path / "collection.tsv"
    f.write_bytes(content)
    with pytest.raises(DataFormatError) as ei:
        build_offsets(f, block=8)  # tiny blocks: line numbers must survive block boundaries
    msg = str(ei.value)
    assert f"collection.tsv{where}" in msg and what in msg and "\n" not in msg


def test_bad_queries_qrels_and_run_lines(tmp_path):
    _write(tmp_path / "q" / "msmarco-passage", **{"queries.dev.small.tsv": b"101\tfine\n102 no tab\n"})
    with pytest.raises(DataFormatError, match=r"queries\.dev\.small\.tsv:2: a queries line"):
        load_dataset("msmarco", data_dir=tmp_path / "q")
    _write(tmp_path / "r" / "msmarco-passage", **{"qrels.dev.small.tsv": b"101\t0\t1\t1\n102 4\n"})
    with pytest.raises(DataFormatError, match=r"qrels\.dev\.small\.tsv:2:"):
        load_dataset("msmarco", data_dir=tmp_path / "r")
    run = tmp_path / "top1000.dev.tsv"
    run.write_bytes(b"101\t1\tq\tp\n101\n")
    with pytest.raises(DataFormatError, match=r"top1000\.dev\.tsv:2: a top1000 line"):
        read_top1000(run, {"101": Query("101", "q")})
    run.write_bytes(b"101\t1\tq\tp\n101\t1\tq\tp\n")
    with pytest.raises(DataFormatError, match=r"top1000\.dev\.tsv:2: passage '1' is listed twice"):
        read_top1000(run, {"101": Query("101", "q")})


def test_missing_files_are_named(tmp_path):
    _write(tmp_path / "msmarco-passage", {"collection.tsv", "queries.dev.small.tsv"})
    with pytest.raises(DatasetError, match=r"qrels \(qrels\.dev\.small\.tsv\)") as ei:
        load_dataset("msmarco", data_dir=tmp_path)
    assert "\n" not in str(ei.value)


def test_read_only_folder_unpacks_into_the_cache(tmp_path, monkeypatch):
    import attnsift.eval.datasets.msmarco_store as ms

    src = _files(tmp_path)
    folder = tmp_path / "data" / "msmarco-passage"
    folder.mkdir(parents=True)
    _tar(folder / "collectionandqueries.tar.gz", {n: src[n] for n in ("collection.tsv", "queries.dev.small.tsv",
                                                                      "qrels.dev.small.tsv")})
    real_access = ms.os.access
    monkeypatch.setattr(ms.os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    ds = load_dataset("msmarco", data_dir=tmp_path / "data")
    assert ds.corpus["5"].text == PASSAGES[5] and len(ds.queries) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["collectionandqueries.tar.gz"]  # the folder is untouched
    unpacked = next((tmp_path / "cache" / "msmarco-passage").glob("unpacked-*"))
    assert (unpacked / "collection.tsv").read_bytes() == src["collection.tsv"]
