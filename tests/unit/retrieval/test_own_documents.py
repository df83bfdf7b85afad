"""Your own documents: as_documents for every input kind, read_documents for every file format and its errors."""
import json
from pathlib import Path

import pytest

from attnsift.documents import as_documents, check_documents_path, corpus_record, iter_documents, read_documents
from attnsift.errors import DataFormatError
from attnsift.types import Document


def test_as_documents_every_input_kind():
    assert [(d.id, d.text) for d in as_documents(["alpha", "beta"])] == [("d0", "alpha"), ("d1", "beta")]
    assert [d.id for d in as_documents({"x": "one", "y": Document("y", "two")})] == ["x", "y"]
    docs = as_documents([{"_id": "a", "text": "t", "title": "T"}, {"id": "b", "contents": "c"}, {"doc_id": 7, "text": "n"},
                         {"text": "no id"}])
    assert [(d.id, d.title) for d in docs] == [("a", "T"), ("b", None), ("7", None), ("d3", None)]
    assert as_documents([Document("z", "zz")])[0] == Document("z", "zz")
    assert [d.id for d in as_documents(iter(["g1", "g2"]))] == ["d0", "d1"]  # a generator is read once

    class Corpusish:
        def iter_documents(self):
            yield Document("c1", "from a corpus")

    assert as_documents(Corpusish())[0].id == "c1"


@pytest.mark.parametrize("items, error, message", [
    ("one string", TypeError, "not a single string"),
    (Path("docs.jsonl"), TypeError, "read_documents"),
    (42, TypeError, "iterable"),
    ([1.5], TypeError, "item 0: documents are Documents, strings or mappings"),
    ([], ValueError, "no documents given"),
    (["", "  "], ValueError, "all 2 documents have empty text"),
    ([Document("a", "x"), Document("a", "y")], ValueError, "item 1: duplicate document id 'a' \\(first at item 0\\)"),
    (["x", Document("d0", "y")], ValueError, "duplicate document id 'd0'"),
    ([{"id": "a"}], ValueError, "needs a 'text'"),
    ({"k": 3}, TypeError, "id -> text or id -> Document"),
    ({"k": Document("other", "t")}, ValueError, "use its id as the key"),
    ([{"id": "has space", "text": "t"}], ValueError, "without whitespace"),
])
def test_as_documents_rejects(items, error, message):
    with pytest.raises(error, match=message):
        as_documents(items)


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_jsonl_beir_and_plain_lines(tmp_path: Path):
    p = _write(tmp_path / "docs.jsonl", "\n".join([
        json.dumps({"_id": "b1", "title": "T", "text": "beir line"}),
        "",
        json.dumps({"id": "p1", "text": "plain line"}),
        json.dumps({"text": "no id here"}),
    ]) + "\n")
    docs = read_documents(p)
    assert [(d.id, d.title, d.text) for d in docs] == [("b1", "T", "beir line"), ("p1", None, "plain line"),
                                                        ("docs-4", None, "no id here")]
    assert [d.id for d in iter_documents(p)] == ["b1", "p1", "docs-4"]


def test_tsv_two_and_three_columns_with_header(tmp_path: Path):
    p = _write(tmp_path / "docs.tsv", "id\ttext\nx1\tfirst text\nx2\tTitle\tsecond text\n")
    assert [(d.id, d.title, d.text) for d in read_documents(p)] == [("x1", None, "first text"),
                                                                    ("x2", "Title", "second text")]
    no_header = _write(tmp_path / "n.tsv", "x1\tonly\n")
    assert read_documents(no_header)[0].text == "only"


def test_folder_of_text_files_and_beir_folder(tmp_path: Path):
    folder = tmp_path / "notes"
    _write(folder / "b.txt", "second file\n")
    _write(folder / "a.md", "# first\n")
    _write(folder / "sub" / "my note.txt", "nested")
    _write(folder / ".hidden" / "x.txt", "skipped")
    _write(folder / "image.png", b"\x89PNG")
    docs = read_documents(folder)
    assert [(d.id, d.text) for d in docs] == [("a", "# first"), ("b", "second file"), ("sub/my_note", "nested")]
    beir = tmp_path / "beir"
    _write(beir / "corpus.jsonl", json.dumps({"_id": "c1", "text": "t"}) + "\n")
    assert [d.id for d in read_documents(beir)] == ["c1"]  # no queries or qrels needed
    assert check_documents_path(beir) == beir / "corpus.jsonl"


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"id": "a", "text": "ok"}\n{"id": "b", "text": \n', r"bad\.jsonl:2: not valid JSON"),
    ("list.jsonl", "[1, 2]\n", r"list\.jsonl:1: expected a JSON object"),
    ("notext.jsonl", '{"id": "a"}\n', r"notext\.jsonl:1: a document needs a 'text'"),
    ("dup.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
     r"dup\.jsonl:2: duplicate document id 'a' \(first at .*dup\.jsonl:1\)"),
    ("latin.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n', r"latin\.jsonl:2: byte 0xe9"),
    ("empty.jsonl", "\n\n", r"empty\.jsonl holds no documents"),
    ("cols.tsv", "a\tb\tc\td\n", r"cols\.tsv:1: expected 2 tab-separated columns"),
    ("badid.tsv", "has space\ttext\n", r"badid\.tsv:1: .*without whitespace"),
])
def test_file_errors_name_file_and_line(tmp_path: Path, name, content, message):
    with pytest.raises(DataFormatError, match=message):
        read_documents(_write(tmp_path / name, content))


def test_path_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no documents at"):
        read_documents(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="suffix '.csv'"):
        read_documents(_write(tmp_path / "docs.csv", "a,b\n"))
    with pytest.raises(ValueError, match="single text file; give the folder"):
        read_documents(_write(tmp_path / "one.txt", "x"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataFormatError, match="holds no .txt or .md files"):
        read_documents(tmp_path / "emptydir")
    _write(tmp_path / "bad" / "x.txt", b"line one\nbad \xff byte\n")
    with pytest.raises(DataFormatError, match=r"x\.txt:2: byte 0xff"):
        read_documents(tmp_path / "bad")


def test_corpus_record_fingerprints_match_the_data_set_loader(tmp_path: Path):
    from attnsift.eval.datasets import Corpus

    p = _write(tmp_path / "corpus.jsonl", json.dumps({"_id": "a", "text": "x"}) + "\n")
    docs, fp, dataset = corpus_record(p)
    assert fp == Corpus.from_jsonl(p).fingerprint() and dataset is None and docs[0].id == "a"
    docs, fp2, _ = corpus_record(["x"])
    assert fp2 == Corpus.from_documents(docs).fingerprint()
