"""The ONNX Runtime backends of the encoder: same vectors as torch, exported once, cached and checked.

A tiny random-weight BERT saved as a folder (MiniLM's tokenizer), exported with the real exporter and
run by the real ONNX Runtime; the real MiniLM for one slow check.
"""
from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from attnsift.retrieval import onnx_encoder, onnx_quantize
from attnsift.retrieval.encoders import Encoder
from attnsift.retrieval.encoding_cache import default_cache_dir, encoder_identity
from helpers import SIX_TOPIC_TEXTS

TEXTS = [*SIX_TOPIC_TEXTS, "x", "A much longer text " + "with many repeated words " * 12]
QUERIES = ["does vitamin D help bones?", "cats"]
OPTS = {"max_length": 64, "query_prefix": "query: ", "doc_prefix": "passage: "}
MIXED = onnx_quantize.RECIPES["onnx-int8-mixed"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny BERT folder and a module-wide $ATTNSIFT_CACHE (the exports live under it)."""
    from helpers import tiny_encoder_cache

    with tiny_encoder_cache(tmp_path_factory, "onnx") as (folder, cache):
        yield {"folder": folder, "cache": cache}


@pytest.fixture(scope="module")
def encoders(env):
    return {b: Encoder(env["folder"], backend=b, **OPTS) for b in onnx_encoder.BACKENDS}


def test_onnx_equals_torch_dense_and_tokens(encoders):
    torch_enc, onnx_enc = encoders["torch"], encoders["onnx"]
    assert onnx_enc.model is None and onnx_enc.config["backend"] == "onnx" and "backend" not in torch_enc.config
    d_t, d_o = torch_enc.encode_documents(TEXTS), onnx_enc.encode_documents(TEXTS)
    assert d_o.shape == d_t.shape == (len(TEXTS), 32) and np.abs(d_o - d_t).max() < 1e-5
    q_t, q_o = torch_enc.encode_queries(QUERIES), onnx_enc.encode_queries(QUERIES)
    assert np.abs(q_o - q_t).max() < 1e-5
    t_t, t_o = torch_enc.encode_tokens(TEXTS, is_query=False), onnx_enc.encode_tokens(TEXTS, is_query=False)
    assert [a.shape for a in t_o] == [a.shape for a in t_t]
    assert max(np.abs(a - b).max() for a, b in zip(t_o, t_t) if len(a)) < 1e-5
    # One forward pass for both, and batch size does not change the vectors.
    pooled, toks = onnx_enc.encode_both(TEXTS)
    assert np.abs(pooled - d_o).max() < 1e-6 and all(np.array_equal(a, b) for a, b in zip(toks, t_o))


@pytest.mark.parametrize("backend, dense_cos, token_cos", [("onnx-int8", 0.99, 0.98), ("onnx-int8-block", 0.999, 0.995),
                                                          ("onnx-int8-mixed", 0.99, 0.98)])
def test_int8_is_close(encoders, backend, dense_cos, token_cos):
    """The stated tolerances on the tiny model: cosine to float32 of sentence and token vectors."""
    d_t, d_8 = encoders["onnx"].encode_documents(TEXTS), encoders[backend].encode_documents(TEXTS)
    cos = (d_t * d_8).sum(1)  # both L2-normalised
    assert cos.min() >= dense_cos and np.abs(d_t - d_8).max() > 1e-6  # close, and really quantised
    t_t, t_8 = encoders["onnx"].encode_tokens(TEXTS, False), encoders[backend].encode_tokens(TEXTS, False)
    assert [a.shape for a in t_8] == [a.shape for a in t_t]
    assert min((a * b).sum(1).min() for a, b in zip(t_8, t_t) if len(a)) >= token_cos


def test_block_recipe_is_blockwise_int8_and_closer_than_dynamic(encoders):
    import onnx

    graph = onnx.load(str(encoders["onnx-int8-block"]._onnx.path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulNBits") == 2 * 6 and "MatMul" in ops  # 6 weight MatMuls a layer; attention's stay
    assert all(a.i == 8 for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits")
    ref = encoders["onnx"].encode_documents(TEXTS)
    gap = {b: float(1 - (ref * encoders[b].encode_documents(TEXTS)).sum(1).mean()) for b in ("onnx-int8", "onnx-int8-block")}
    assert gap["onnx-int8-block"] < gap["onnx-int8"] / 3, gap


def test_mixed_recipe_routes_by_kind(encoders):
    """onnx-int8-mixed: FFN MatMuls in 8-bit blocks, attention ones (QKV, output) in dynamic int8, closer to
    float32 than onnx-int8; no float32 weight MatMul left (the two attention products stay float32)."""
    import onnx

    path = encoders["onnx-int8-mixed"]._onnx.path
    assert sorted(f.name for f in path.parent.iterdir()) == ["manifest.json", "model.onnx"]  # no scratch files
    nodes = onnx.load(str(path)).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("MatMulNBits") == 2 * 2 and ops.count("MatMulInteger") == 2 * 4 and ops.count("MatMul") == 2 * 2
    blocked = sorted(n.name for n in nodes if n.op_type == "MatMulNBits")
    assert all(re.search(r"/(intermediate|output)/dense/MatMul_Q8$", b) and "attention" not in b for b in blocked)
    ref = encoders["onnx"].encode_documents(TEXTS)
    gap = {b: float(1 - (ref * encoders[b].encode_documents(TEXTS)).sum(1).mean()) for b in ("onnx-int8", "onnx-int8-mixed")}
    assert gap["onnx-int8-mixed"] < gap["onnx-int8"], gap


def test_mixed_recipe_with_fusion_and_float32_kinds(encoders, tmp_path):
    """fuse='bert': ONNX Runtime's transformer optimizer first (fused attention -> QAttention, skip-LayerNorm,
    bias-GELU); a kind in float32 stays a float32 MatMul; the vectors stay close to float32."""
    import onnx

    from attnsift.retrieval.onnx_encoder import OnnxForward

    out = tmp_path / "fused.onnx"
    onnx_quantize.quantize(encoders["onnx"]._onnx.path, out, {**MIXED, "fuse": "bert", "blockwise": ["ffn_out"],
                                                             "float32": ["attn_out"]}, num_heads=2, hidden_size=32)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["fused.onnx"]  # the scratch files are removed
    nodes = onnx.load(str(out)).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("QAttention") == 2 and ops.count("SkipLayerNormalization") == 2 * 2 and "BiasGelu" in ops
    assert "Softmax" not in ops and ops.count("MatMulNBits") == 2 and ops.count("MatMulInteger") == 2
    assert sorted(n.name for n in nodes if n.op_type == "MatMul") == [f"/inner/encoder/layer.{i}/attention/output/dense/MatMul"
                                                                       for i in range(2)]
    fused = OnnxForward(out, threads=1)
    batch = encoders["onnx"].tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="np")
    h8, h32 = fused(batch), encoders["onnx"]._onnx(batch)
    keep = batch["attention_mask"].astype(bool)
    a, b = h8[keep], h32[keep]
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.98


def test_export_is_cached_and_reused(env, encoders, monkeypatch):
    folders = sorted(p.name for p in (env["cache"] / "onnx").iterdir())
    assert sorted(f.split("-op")[0] for f in folders) == ["tinybert-onnx", "tinybert-onnx-int8", "tinybert-onnx-int8-block",
                                                          "tinybert-onnx-int8-mixed", "tinybert-onnx-int8-token"]
    model = encoders["onnx"]._onnx.path
    before = model.stat().st_mtime_ns

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_encoder, "_export_fp32", no_export)
    monkeypatch.setattr(onnx_quantize, "quantize", no_export)
    again = Encoder(env["folder"], backend="onnx", max_length=64, threads=1)
    assert again._onnx.path == model and model.stat().st_mtime_ns == before and again._onnx.threads == 1
    assert Encoder(env["folder"], backend="onnx-int8")._onnx.path == encoders["onnx-int8"]._onnx.path


def test_int8_cache_key_and_source_check(env, encoders, monkeypatch, caplog):
    """The int8 folder is keyed by recipe and ONNX Runtime's version, and records the float32 file it came from:
    another recipe -> another folder; a changed float32 export -> quantised again."""
    from attnsift.retrieval.encoding_cache import model_identity

    ident = model_identity(encoders["onnx"])
    dirs = {b: onnx_encoder.export_dir(ident, b) for b in onnx_encoder.BACKENDS[1:]}
    assert len(set(dirs.values())) == len(onnx_encoder.BACKENDS) - 1 and dirs["onnx-int8"] == encoders["onnx-int8"]._onnx.path.parent
    assert dirs["onnx-int8-mixed"] == encoders["onnx-int8-mixed"]._onnx.path.parent
    monkeypatch.setitem(onnx_quantize.RECIPES, "onnx-int8-block", {**onnx_quantize.RECIPES["onnx-int8-block"], "block_size": 32})
    assert onnx_encoder.export_dir(ident, "onnx-int8-block") != dirs["onnx-int8-block"]
    monkeypatch.setitem(onnx_quantize.RECIPES, "onnx-int8-mixed", {**onnx_quantize.RECIPES["onnx-int8-mixed"], "float32": ["qkv"]})
    assert onnx_encoder.export_dir(ident, "onnx-int8-mixed") != dirs["onnx-int8-mixed"]
    monkeypatch.undo()
    monkeypatch.setenv("ATTNSIFT_CACHE", str(env["cache"]))
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
    assert onnx_encoder.export_dir(ident, "onnx-int8") != dirs["onnx-int8"]
    assert onnx_encoder.export_dir(ident, "onnx") == dirs["onnx"]  # float32 does not depend on the quantiser
    monkeypatch.undo()
    monkeypatch.setenv("ATTNSIFT_CACHE", str(env["cache"]))
    manifest = dirs["onnx-int8"] / "manifest.json"
    data = json.loads(manifest.read_text())
    assert data["recipe"] == onnx_quantize.RECIPES["onnx-int8"] and len(data["source_sha256"]) == 64
    data["source_sha256"] = "0" * 64  # as if the float32 export had changed since
    manifest.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="attnsift.retrieval.encoders"):
        enc = Encoder(env["folder"], backend="onnx-int8", **OPTS)
    assert "quantised from another float32 export" in caplog.text
    assert json.loads(manifest.read_text())["source_sha256"] != "0" * 64
    assert np.array_equal(enc.encode_documents(TEXTS), encoders["onnx-int8"].encode_documents(TEXTS))


@pytest.mark.parametrize("settings, message", [
    ({"method": "static"}, "quantisation method must be 'dynamic', 'blockwise' or 'mixed', got 'static'"),
    ({"method": "blockwise", "bits": 4, "block_size": 32, "accuracy_level": 4}, "8-bit only, got bits=4"),
    ({"method": "blockwise", "bits": 8, "block_size": 48, "accuracy_level": 4}, "block_size must be a power of two >= 16"),
    ({"method": "blockwise", "bits": 8, "block_size": 32, "accuracy_level": 2}, "accuracy_level must be 0, 1 or 4"),
    ({"method": "dynamic", "weight_type": "int8"}, "weight_type 'QInt8' or 'QUInt8'"),
    ({**MIXED, "fuse": "gpt2"}, "fuse must be 'bert' (ONNX Runtime's transformer optimizer) or None, got 'gpt2'"),
    ({**MIXED, "blockwise": ["ffn"]}, "blockwise must list MatMul kinds among qkv, attn_out, ffn_in, ffn_out, got 'ffn'"),
    ({**MIXED, "float32": "qkv"}, "float32 must list MatMul kinds among"),
    ({**MIXED, "float32": ["ffn_in"]}, "a MatMul kind is either blockwise or float32, not both: ['ffn_in']"),
    ({**MIXED, "fuse": "bert", "blockwise": ["qkv"]}, "qkv cannot be blockwise with fuse='bert'"),
    ({**MIXED, "block_size": 100}, "block_size must be a power of two >= 16, got 100"),
])
def test_bad_recipes_get_one_line(tmp_path, settings, message):
    with pytest.raises(ValueError) as info:
        onnx_quantize.quantize(tmp_path / "missing.onnx", tmp_path / "out.onnx", settings)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="not a quantised backend; expected one of onnx-int8, onnx-int8-block, onnx-int8-mixed"):
        onnx_quantize.recipe("onnx")


def test_damaged_or_partial_export_is_redone(env, encoders, caplog):
    model = encoders["onnx"]._onnx.path
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])  # a truncated file: its checksum no longer matches
    with caplog.at_level(logging.WARNING, logger="attnsift.retrieval.encoders"):
        enc = Encoder(env["folder"], backend="onnx", max_length=64, query_prefix="query: ", doc_prefix="passage: ")
    assert "does not match its checksum" in caplog.text and "exporting again" in caplog.text
    assert model.read_bytes() == good  # the export is deterministic
    (model.parent / "manifest.json").unlink()  # an interrupted export: no manifest
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnsift.retrieval.encoders"):
        enc = Encoder(env["folder"], backend="onnx", max_length=64, query_prefix="query: ", doc_prefix="passage: ")
    assert "no manifest.json" in caplog.text and (model.parent / "manifest.json").is_file()
    assert np.abs(enc.encode_documents(TEXTS) - encoders["torch"].encode_documents(TEXTS)).max() < 1e-5


def test_encoding_cache_key_differs_by_backend(encoders):
    fp = "0" * 64
    dirs = {b: default_cache_dir(e, fp, ["dense"]) for b, e in encoders.items()}
    assert len(set(dirs.values())) == len(onnx_encoder.BACKENDS)
    assert dirs["torch"].name.startswith("tinybert-dense-")  # torch keys are what they were before backends
    assert dirs["onnx"].name.startswith("tinybert-onnx-dense-") and dirs["onnx-int8"].name.startswith("tinybert-onnx-int8-dense-")
    assert "backend" not in encoder_identity(encoders["torch"]) and encoder_identity(encoders["onnx"])["backend"] == "onnx"


def test_dense_retriever_on_onnx_caches_apart(env, encoders):
    pytest.importorskip("faiss")
    from attnsift.retrieval.dense import DenseRetriever

    r_t = DenseRetriever.from_corpus(TEXTS, encoders["torch"], progress=False)
    r_o = DenseRetriever.from_corpus(TEXTS, encoders["onnx"], progress=False)
    names = sorted(p.name.rsplit("-", 1)[0] for p in (env["cache"] / "encodings").iterdir())
    assert names == ["tinybert-dense", "tinybert-onnx-dense"]
    assert r_t.retrieve(QUERIES[0], k=3).doc_ids == r_o.retrieve(QUERIES[0], k=3).doc_ids


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "onxx"}, "backend must be one of torch, onnx, onnx-int8, onnx-int8-block, onnx-int8-mixed, onnx-int8-token, got 'onxx'"),
    ({"backend": 3}, "backend must be one of torch, onnx, onnx-int8, onnx-int8-block, onnx-int8-mixed, onnx-int8-token, got 3"),
    ({"backend": "torch", "threads": 2}, "threads applies to the ONNX backends"),
    ({"backend": "onnx", "threads": 0}, "threads must be an integer >= 1"),
    ({"backend": "onnx", "device": "cuda"}, "the ONNX backends run on the CPU, got device='cuda'"),
    ({"backend": "onnx-int8", "dtype": "bfloat16"}, "the ONNX backends run in float32, got dtype='bfloat16'"),
])
def test_bad_options_get_one_line(env, kwargs, message):
    with pytest.raises(ValueError) as info:
        Encoder(env["folder"], **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_backend_and_threads_as_strings(env, encoders):
    """The CLI's spelling: option values arrive as strings."""
    import torch

    enc = Encoder(env["folder"], backend="ONNX", threads="1", max_length="64")
    assert enc.backend == "onnx" and enc._onnx.threads == 1 and "backend='onnx'" in repr(enc)
    assert encoders["onnx"]._onnx.threads == torch.get_num_threads()  # default: torch's thread count


@pytest.mark.slow
def test_minilm_onnx_matches_torch(tmp_path, monkeypatch):
    """The real all-MiniLM-L6-v2: float32 within 1e-5 of torch, int8 cosine >= 0.98 (SciFact passages: >= 0.991,
    benchmarks/results/encoding_speed.md; one-word and repetitive texts here go down to 0.983); int8-block
    cosine >= 0.995 (SciFact passages: >= 0.9985; the one-word text "x" here: 0.996); int8-mixed cosine >= 0.99
    (SciFact passages: >= 0.993)."""
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path))
    texts = [*TEXTS, *(t.upper() for t in TEXTS)]
    torch_v = Encoder("minilm").encode_documents(texts)
    onnx_v = Encoder("minilm", backend="onnx").encode_documents(texts)
    int8_v = Encoder("minilm", backend="onnx-int8").encode_documents(texts)
    block_v = Encoder("minilm", backend="onnx-int8-block").encode_documents(texts)
    mixed_v = Encoder("minilm", backend="onnx-int8-mixed").encode_documents(texts)
    assert np.abs(onnx_v - torch_v).max() < 1e-5
    assert (int8_v * torch_v).sum(1).min() >= 0.98
    assert (block_v * torch_v).sum(1).min() >= 0.995
    mixed_cos = (mixed_v * torch_v).sum(1)
    assert mixed_cos.min() >= 0.99 and 1 - mixed_cos.mean() < 1 - (int8_v * torch_v).sum(1).mean()


def test_int8_recipe_is_part_of_the_encoding_cache_key(monkeypatch):
    """A changed int8 recipe must not reuse corpus vectors made by the old one."""
    from attnsift.retrieval import onnx_quantize

    class _Enc:
        config = {"name": "x", "dim": 4}
        location = "/nowhere"
        backend = "onnx-int8"

    before = encoder_identity(_Enc())
    assert before["int8_recipe"] == onnx_quantize.RECIPES["onnx-int8"]
    monkeypatch.setitem(onnx_quantize.RECIPES, "onnx-int8", {**onnx_quantize.RECIPES["onnx-int8"], "per_channel": False})
    assert encoder_identity(_Enc()) != before
    _Enc.backend = "onnx"
    assert "int8_recipe" not in encoder_identity(_Enc())
