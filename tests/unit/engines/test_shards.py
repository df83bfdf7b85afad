"""Corpus shards without Ray: the descriptors planned here, the texts a worker reads from them (those the
index build encodes, chunk for chunk), and the one-line refusals of a file a worker cannot read."""
from __future__ import annotations

import json
import pickle

import pytest

from attnsift.documents import corpus_record
from attnsift.engines.encoding import _key, engine_encoder, plan_shards, read_shard, shard_source

TEXTS = [("a", "Scurvy", "Vitamin C deficiency causes scurvy."), ("b", None, "Caf\u00e9 au lait \u2013 a drink."),
         ("c", "Iron", "Iron deficiency causes anaemia."), ("d", None, "Zinc and wound healing."),
         ("e", "", "Blank title, some text."), ("f", "Sleep", "Sleep helps memory.")]


def _beir(folder):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"_id": i, "title": t or "", "text": x}) for i, t, x in TEXTS]
    lines.insert(2, "   ")  # a blank line: skipped by every reader
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "scurvy"}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\n")
    return folder


def _inputs(tmp_path):
    """Every kind of corpus file a worker can read, each with what the index build is given."""
    from attnsift.eval.datasets import load_dataset

    beir = _beir(tmp_path / "beir")
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("id\ttitle\ttext\n" + "".join(f"{i}\t{t or ''}\t{x}\r\n" for i, t, x in TEXTS) + "\n",
                   encoding="utf-8")
    folder = tmp_path / "txt"
    for i, _, x in TEXTS:
        (folder / ("sub" if i in "bd" else "")).mkdir(parents=True, exist_ok=True)
        (folder / ("sub" if i in "bd" else "") / f"{i} doc.txt").write_text(f"  {x}\n", encoding="utf-8")
    marco = tmp_path / "msmarco-passage"
    marco.mkdir()
    (marco / "collection.tsv").write_text("".join(f"{n}\t{x}\n" for n, (_, _, x) in enumerate(TEXTS)), encoding="utf-8")
    from attnsift.eval.datasets.base import Corpus
    from attnsift.eval.datasets.msmarco_store import MsMarcoStore

    return {"beir": load_dataset(str(beir)), "jsonl": beir / "corpus.jsonl", "tsv": tsv, "folder": folder,
            "msmarco": Corpus(MsMarcoStore(marco))}


@pytest.mark.parametrize("kind", ["beir", "jsonl", "tsv", "folder", "msmarco"])
def test_workers_read_the_texts_the_build_encodes_chunk_for_chunk(tmp_path, kind):
    documents = _inputs(tmp_path)[kind]
    source = shard_source(documents)
    assert source is not None and source.kind == kind
    shards = plan_shards(source, chunk_size=4)
    expected = [d.contents for d in corpus_record(documents)[0]]
    assert [s.count for s in shards] == [4, 2]
    read = [read_shard(pickle.loads(pickle.dumps(s))) for s in shards]  # as a worker gets it
    assert read[0] + read[1] == expected
    assert [s.key for s in shards] == [_key(expected[:4]), _key(expected[4:])]
    assert max(len(pickle.dumps(s)) for s in shards) < 1000 or kind == "folder"


def test_texts_in_memory_have_no_source(tmp_path):
    from attnsift.types import Document

    assert shard_source([Document("a", "x")]) is None
    from attnsift.eval.datasets.base import Corpus

    assert shard_source(Corpus.from_documents([Document("a", "x")])) is None


def test_a_file_a_worker_cannot_read_is_refused_in_one_line(tmp_path):
    import attnsift.engines.encoding as enc

    beir = _beir(tmp_path / "beir")
    shards = plan_shards(shard_source(beir / "corpus.jsonl"), chunk_size=4)
    moved = tmp_path / "elsewhere.jsonl"
    (beir / "corpus.jsonl").rename(moved)  # a node without the data
    with pytest.raises(FileNotFoundError) as err:
        read_shard(shards[0])
    msg = str(err.value)
    assert "\n" not in msg and str(beir / "corpus.jsonl") in msg
    assert msg.endswith("put the data on every node (at the same path) or use --engine local")
    moved.write_bytes(moved.read_bytes().replace(b"Scurvy", b"Rickets"))  # another version of the file
    moved.rename(beir / "corpus.jsonl")
    enc._CHECKED.clear()
    with pytest.raises(ValueError, match="is not the driver's copy .* or use --engine local"):
        read_shard(shards[0])


def test_engine_encoder_plans_shards_for_a_file_and_texts_for_memory(tmp_path):
    from attnsift.retrieval.encoders import Encoder

    encoder = Encoder.__new__(Encoder)  # the plan only needs an Encoder instance (nothing is encoded here)
    beir = _beir(tmp_path / "beir")
    on_disk = engine_encoder(encoder, object(), beir / "corpus.jsonl", chunk_size=4)
    plan = on_disk.__dict__["_plan"]
    assert plan["source"].kind == "jsonl" and [type(c).__name__ for c in plan["chunks"]] == ["Shard", "Shard"]
    texts = [x for _, _, x in TEXTS]
    in_memory = engine_encoder(encoder, object(), texts, chunk_size=4).__dict__["_plan"]
    assert in_memory["source"] is None and in_memory["chunks"] == [texts[:4], texts[4:]]
    assert in_memory["index"] == {_key(texts[:4]): 0, _key(texts[4:]): 1}
