"""The Ray engine on a local Ray (2 CPUs, started once for the module): the same bytes as the local run,
a worker killed in the middle of a run, the CLI's engine options and their errors.

Identical means: the TREC run files are equal byte for byte (scores are written with ``repr``, so every
score is the same float). The local runs here use 2 torch threads and each Ray worker 1.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsift.cli.main import app

pytest.importorskip("ray")

RERANK = ["rerank", "--dataset", "scifact", "--retriever", "bm25", "--reranker", "icr", "--first-stage-k", "20",
          "--depth", "5", "--max-queries", "4", "--option", "max_words=30", "--json", "--no-compare-first-stage"]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module (the engine reuses it and leaves it running)."""
    import logging

    import ray

    from attnsift.engines.ray import _quiet_data, _quiet_ray, _route_ray_messages

    _quiet_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 1024 * 1024)
    _route_ray_messages()
    _quiet_data()
    yield ray
    ray.shutdown()


@pytest.fixture
def two_threads():
    """The local runs at 2 torch threads (the Ray workers run at 1): identical results regardless."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _invoke(args: list[str]):
    res = CliRunner().invoke(app, args)
    return res


def test_rerank_engine_ray_writes_the_local_run_byte_for_byte(data_dir, tiny_model_dir, tmp_path, local_ray,
                                                              two_threads):
    model = ["--model", str(tiny_model_dir)]
    local = _invoke([*RERANK, *model, "--save-run", str(tmp_path / "local.trec")])
    assert local.exit_code == 0, local.output
    ray = _invoke([*RERANK, *model, "--save-run", str(tmp_path / "ray.trec"), "--engine", "ray",
                   "--engine-option", "num_workers=2"])
    assert ray.exit_code == 0, ray.output
    assert (tmp_path / "ray.trec").read_bytes() == (tmp_path / "local.trec").read_bytes()
    a, b = json.loads(local.stdout), json.loads(ray.stdout)
    assert a["num_queries"] == b["num_queries"] == 4 and a["nDCG@10"] == b["nDCG@10"]
    assert b["engine"].startswith("RayEngine(") and b["truncation"] == a["truncation"]
    assert b["truncation"]["documents"] == 20  # counted on the workers, merged here


def test_a_killed_worker_is_retried_and_the_bench_records_each_query_once(data_dir, tiny_model_dir, tmp_path,
                                                                          local_ray, two_threads):
    from attnsift.bench.quality import _Interrupted, run_quality_bench
    from attnsift.engines.ray import RayEngine

    spec = f"bm25+icr:{tiny_model_dir}[max_words=30;depth=5]"  # DL19: the provided BM25 run (no indexing)
    args = dict(datasets=["dl19"], systems=[spec], max_queries=5, progress=False, plots=False)
    full = run_quality_bench(out_dir=tmp_path / "local", **args)
    out = tmp_path / "ray"
    with pytest.raises(_Interrupted):  # a local run stopped after 2 queries...
        run_quality_bench(out_dir=out, stop_after=2, **args)
    marker = tmp_path / "killed"
    engine = RayEngine(num_workers=2, batch_size=1, _kill_once=str(marker))
    res = run_quality_bench(out_dir=out, engine=engine, **args)  # ...resumed on Ray, where one worker dies
    assert marker.exists()  # a worker did end its own process on its first batch
    r = res.get("dl19", spec)
    assert r.resumed_queries == 2 and r.report.num_queries == 5
    lines = (r.folder.parent / "progress.jsonl").read_text().splitlines()
    qids = [json.loads(line)["qid"] for line in lines]
    assert sorted(qids) == sorted(set(qids)) and len(qids) == 5  # nothing lost, nothing twice
    local_run = full.get("dl19", spec).folder / "run.trec"
    assert (r.folder / "run.trec").read_bytes() == local_run.read_bytes()


def test_index_engine_ray_encodes_a_dense_index_like_the_local_build(tmp_path, local_ray, two_threads):
    import numpy as np

    from helpers import write_tiny_beir

    from attnsift.registry import load_index

    pytest.importorskip("faiss")
    beir = write_tiny_beir(tmp_path / "tiny")
    common = ["index", "--input", str(beir / "corpus.jsonl"), "--retriever", "dense", "--retriever-option",
              "cache=false"]
    local = _invoke([*common, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    ray = _invoke([*common, "--out", str(tmp_path / "ray"), "--engine", "ray"])
    assert ray.exit_code == 0, ray.output
    a, b = load_index(tmp_path / "local"), load_index(tmp_path / "ray")
    va, vb = (np.stack([x.index.index.reconstruct(i) for i in range(x.num_docs)]) for x in (a, b))
    assert va.shape == (8, 384) and np.array_equal(va, vb)
    assert a.retrieve("vitamin C scurvy", k=3).doc_ids == b.retrieve("vitamin C scurvy", k=3).doc_ids


@pytest.mark.parametrize("extra,message", [
    (["--engine", "spark"], "unknown engine 'spark'; choose one of: local, ray"),
    (["--engine", "ray", "--ray-address", "http://head"], "is not a Ray address"),
    (["--engine", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--ray-address", "10.0.0.1:6379"], "--ray-address is for --engine ray"),
    (["--engine", "ray", "--engine-option", "num_workers=two"], "num_workers='two': expected an integer"),
])
def test_engine_mistakes_are_one_line_before_any_work(extra, message):
    res = CliRunner().invoke(app, ["rerank", "--dataset", "no-such-dataset", "--reranker", "icr", *extra])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output


def test_index_engine_ray_is_for_dense(tmp_path):
    res = CliRunner().invoke(app, ["index", "--input", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o"),
                                   "--engine", "ray"])
    assert res.exit_code == 2 and "--engine ray encodes the documents of a dense index" in res.output


@pytest.mark.slow
@pytest.mark.model
def test_smollm2_scifact_10_queries_on_ray_equal_the_local_run(data_dir, tmp_path, local_ray, two_threads):
    """The acceptance check: BM25 + ICR (SmolLM2-135M) on 10 SciFact queries, Ray against local."""
    args = ["rerank", "--dataset", "scifact", "--retriever", "bm25", "--reranker", "icr", "--max-queries", "10",
            "--first-stage-k", "100", "--depth", "20", "--option", "max_words=100", "--json"]
    local = _invoke([*args, "--save-run", str(tmp_path / "local.trec")])
    assert local.exit_code == 0, local.output
    ray = _invoke([*args, "--save-run", str(tmp_path / "ray.trec"), "--engine", "ray"])
    assert ray.exit_code == 0, ray.output
    assert (tmp_path / "ray.trec").read_bytes() == (tmp_path / "local.trec").read_bytes()


# ------------------------------------------------------------------------------------------ corpus shards
@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A random 1-layer BERT with MiniLM's tokenizer, saved as a model folder (an encoder in milliseconds)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers import write_tiny_encoder

    return write_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"), positions=128)


def _corpus(root, n=700):
    """A BEIR folder of ``n`` short documents: two encoding chunks (512 + the rest)."""
    from helpers import write_tiny_beir

    words = "vitamin scurvy iron zinc sleep memory stars helium milk calcium ships atlantic".split()
    docs = {f"d{i}": (f"T{i % 13}", " ".join(words[(i * k) % len(words)] for k in range(1, 4 + i % 9)))
            for i in range(n)}
    return write_tiny_beir(root, docs)


def _saved(index, folder):
    """The files of a saved index (bytes) and the manifest's record of them."""
    path = index.save(folder)
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "manifest.json"}
    return files, json.loads((path / "manifest.json").read_text())["files"]


def test_workers_read_their_corpus_shards_and_the_build_is_the_local_one(tmp_path, local_ray, two_threads,
                                                                        tiny_encoder_dir):
    import numpy as np

    from attnsift.engines.encoding import engine_encoder
    from attnsift.engines.ray import RayEngine
    from attnsift.eval.datasets import load_dataset
    from attnsift.registry import build_index
    from attnsift.retrieval.encoders import Encoder

    pytest.importorskip("faiss")
    ds = load_dataset(str(_corpus(tmp_path / "corpus")))
    local = build_index(ds, "dense", encoder=tiny_encoder_dir, options={"cache_dir": str(tmp_path / "cache-local")})
    engine = RayEngine(num_workers=2)
    encoder = engine_encoder(Encoder(tiny_encoder_dir), engine, ds)
    on_ray = build_index(ds, "dense", encoder=encoder, options={"cache_dir": str(tmp_path / "cache-ray")})
    # Two chunks went out as shard descriptors: no document text left this process.
    assert engine.sent["chunks"] == engine.sent["shards"] == 2 and engine.sent["texts"] == 0
    assert engine.sent["bytes"] < 2 * 1024  # two descriptors (the texts are ~30 KB)
    assert _saved(on_ray, tmp_path / "ray") == _saved(local, tmp_path / "local")  # index.faiss byte for byte
    a, b = tmp_path / "cache-local", tmp_path / "cache-ray"
    assert (a / "cache.json").read_bytes() == (b / "cache.json").read_bytes()
    for name in ("chunk_000000.npz", "chunk_000001.npz"):  # (a zip's entry times may differ: compare the arrays)
        assert np.array_equal(np.load(a / name)["dense"], np.load(b / name)["dense"])
    # An interrupted build (the second chunk never saved) resumes: only that chunk is encoded on Ray.
    (b / "chunk_000001.npz").unlink()
    engine.sent.update(chunks=0, shards=0, bytes=0)
    again = build_index(ds, "dense", encoder=engine_encoder(Encoder(tiny_encoder_dir), engine, ds),
                        options={"cache_dir": str(b)})
    assert engine.sent["chunks"] == engine.sent["shards"] == 1
    assert _saved(again, tmp_path / "again") == _saved(local, tmp_path / "local2")


def test_a_worker_that_cannot_read_the_corpus_refuses_in_one_line(tmp_path, local_ray, tiny_encoder_dir):
    import numpy as np

    from attnsift.engines.encoding import plan_shards, shard_source
    from attnsift.engines.ray import RayEngine
    from attnsift.retrieval.encoders import Encoder

    corpus = _corpus(tmp_path / "corpus", n=10) / "corpus.jsonl"
    shards = plan_shards(shard_source(corpus))
    corpus.rename(tmp_path / "moved.jsonl")  # the node (here: this one) no longer has the file
    texts = [f"text number {i}" for i in range(10)]  # texts in memory travel from here (the other path)
    engine = RayEngine(num_workers=1, max_retries=0)
    stream = engine.encode_stream(Encoder(tiny_encoder_dir), [texts, *shards])
    i, (vectors, _) = next(stream)
    assert i == 0 and np.array_equal(vectors, Encoder(tiny_encoder_dir)._encode(texts, False, "pooled", False)[0])
    with pytest.raises(FileNotFoundError) as err:
        next(stream)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{corpus} cannot be read on the Ray node ")
    assert msg.endswith("put the data on every node (at the same path) or use --engine local")
    assert engine.sent["chunks"] == 2 and engine.sent["shards"] == 1 and engine.sent["texts"] == 10
