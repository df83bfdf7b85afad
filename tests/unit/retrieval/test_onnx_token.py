"""The ``onnx-int8-token`` recipe: dynamic int8 with one activation scale per row (token).

A one-MatMul graph checked against the arithmetic in numpy (and against ONNX Runtime's per-tensor dynamic
int8, which an outlier row disturbs); a tiny random-weight BERT (MiniLM's tokenizer) exported with the
real exporter, quantised and run by the real ONNX Runtime.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from attnsift.retrieval import onnx_quantize
from attnsift.retrieval.encoders import Encoder
from helpers import SIX_TOPIC_TEXTS

TOKEN = onnx_quantize.RECIPES["onnx-int8-token"]
TEXTS = [*SIX_TOPIC_TEXTS, "x", "A much longer text " + "with many repeated words " * 12]
OPTS = {"max_length": 64, "query_prefix": "query: ", "doc_prefix": "passage: "}
K, N = 48, 24


def _one_matmul(path, w: np.ndarray, bias: np.ndarray) -> None:
    """``y = x @ w + bias`` for ``x`` of shape [batch, length, K], as an opset-17 ONNX file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"], name="/layer.0/intermediate/dense/MatMul"),
         helper.make_node("Add", ["b", "xw"], ["y"], name="/layer.0/intermediate/dense/Add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", N])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _run(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_token")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(K, N)).astype(np.float32)
    bias = rng.normal(size=N).astype(np.float32)
    _one_matmul(root / "fp32.onnx", w, bias)
    return {"root": root, "w": w, "bias": bias, "x": rng.normal(size=(2, 5, K)).astype(np.float32)}


@pytest.mark.parametrize("activation", ["QUInt8", "QInt8"])
def test_per_token_matmul_is_the_stated_arithmetic(small, activation):
    """Per row: s = max|x| / 127, q = round(x / s) (+ 128 for uint8); per output column: w_scale = max|W| / 127,
    Wq = round(W / w_scale); y = (q - zero) @ Wq * s * w_scale + bias."""
    import onnx

    out = small["root"] / f"token-{activation}.onnx"
    onnx_quantize.quantize(small["root"] / "fp32.onnx", out, {**TOKEN, "activation_type": activation})
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "MatMul" not in ops and ops.count("MatMulIntegerToFloat") == 1 and ops.count("QuantizeLinear") == 1
    x, w = small["x"], small["w"]
    s = np.abs(x).max(-1, keepdims=True) / np.float32(127)
    q = np.rint(x / s)  # symmetric: |q| <= 127 in both types, so the uint8 zero point 128 changes nothing here
    ws = np.abs(w).max(0) / np.float32(127)
    wq = np.rint(w / ws)
    ref = (q @ wq) * s * ws + small["bias"]
    got = _run(out, x)
    assert got.shape == (2, 5, N)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    exact = x @ w + small["bias"]
    assert 1e-5 < np.abs(got - exact).max() < 0.05 * np.abs(exact).max()  # quantised, and close


def test_an_outlier_row_changes_only_its_own_row(small):
    """The point of per-token scales: an outlier token (or a padding row) sets no other row's scale; with
    ONNX Runtime's per-tensor dynamic int8 (onnx-int8) it coarsens every row of the batch."""
    src = small["root"] / "fp32.onnx"
    tok, dyn = small["root"] / "tok.onnx", small["root"] / "dyn.onnx"
    onnx_quantize.quantize(src, tok, TOKEN)
    onnx_quantize.quantize(src, dyn, onnx_quantize.RECIPES["onnx-int8"])
    x = small["x"].copy()
    spiked = x.copy()
    spiked[0, 0, 3] = 200.0  # one huge activation in one token
    for path, moves in ((tok, False), (dyn, True)):
        a, b = _run(path, x), _run(path, spiked)
        others = np.abs(a - b).reshape(-1, N)[1:].max()
        assert bool(others > 1e-3) is moves, (path.name, others)
    # And a row's output does not depend on the other rows at all (batch of one vs batch of two).
    assert np.array_equal(_run(tok, x[1:2]), _run(tok, x)[1:2])


def test_deterministic_bytes_and_settings_checked(small, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx_quantize.quantize(small["root"] / "fp32.onnx", a, TOKEN)
    onnx_quantize.quantize(small["root"] / "fp32.onnx", b, TOKEN)
    assert a.read_bytes() == b.read_bytes()
    for bad, message in [({"weight_type": "QUInt8"}, "weight_type must be 'QInt8', got 'QUInt8'"),
                         ({"activation_type": "int8"}, "activation_type must be 'QUInt8' (zero point 128) or 'QInt8'"),
                         ({"fuse": "bert"}, "works on the unfused graph: fuse must be None, got 'bert'"),
                         ({"blockwise": ["ffn"]}, "blockwise must list MatMul kinds among qkv, attn_out"),
                         ({"blockwise": ["qkv"], "float32": ["qkv"]}, "either blockwise or float32, not both"),
                         ({"blockwise": ["qkv"], "block_size": 100}, "block_size must be a power of two >= 16"),
                         ({"smooth": 0}, "smooth (SmoothQuant's alpha) must be a number in (0, 1] or None, got 0"),
                         ({"smooth": "half"}, "smooth (SmoothQuant's alpha) must be a number in (0, 1]")]:
        with pytest.raises(ValueError) as info:
            onnx_quantize.quantize(tmp_path / "missing.onnx", tmp_path / "out.onnx", {**TOKEN, **bad})
        assert message in str(info.value) and "\n" not in str(info.value)
    assert '"method": "per_token"' in onnx_quantize.recipe_key("onnx-int8-token")


def test_smoothing_moves_an_outlier_channel_into_the_weights(tmp_path):
    """input_ids -> embedding -> LayerNormalization (one channel's scale 40x the others) -> MatMul: smoothing
    divides that channel by the largest factor (a ``Mul`` before the quantiser, its factor in W's row) and
    brings the int8 output closer to float32 than per-token scales alone."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    vocab, k, n = 1200, 32, 16
    gamma = np.ones(k, np.float32)
    gamma[7] = 40.0
    inits = [numpy_helper.from_array(rng.normal(size=(vocab, k)).astype(np.float32), "emb"),
             numpy_helper.from_array(gamma, "ln_w"), numpy_helper.from_array(np.zeros(k, np.float32), "ln_b"),
             numpy_helper.from_array((rng.normal(size=(k, n)) / np.sqrt(k)).astype(np.float32), "w")]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "input_ids"], ["e"], name="/embeddings/Gather"),
         helper.make_node("LayerNormalization", ["e", "ln_w", "ln_b"], ["h"], name="/embeddings/LayerNorm", axis=-1),
         helper.make_node("MatMul", ["h", "w"], ["y"], name="/layer.0/attention/self/query/MatMul")],
        "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", n])], inits)
    src = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    ids = rng.integers(0, vocab, size=(4, 20))

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]

    err = {}
    for alpha in (None, 0.5):
        out = tmp_path / f"smooth-{alpha}.onnx"
        onnx_quantize.quantize(src, out, {**TOKEN, "smooth": alpha})
        g = onnx.load(str(out)).graph
        muls = [i for i in g.initializer if i.name.endswith("_invf")]
        assert len(muls) == (alpha is not None)
        if muls:
            inv = numpy_helper.to_array(muls[0])
            assert int(np.argmin(inv)) == 7 and inv[7] < inv[np.arange(k) != 7].min() / 3
        err[alpha] = float(np.abs(run(out) - run(src)).mean())
    assert err[0.5] < err[None] / 2, err


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny BERT folder, a module-wide $ATTNSIFT_CACHE, and its float32 and per-token encoders."""
    from helpers import tiny_encoder_cache

    with tiny_encoder_cache(tmp_path_factory, "onnx_token_bert") as (folder, _):
        yield {b: Encoder(folder, backend=b, **OPTS) for b in ("onnx", "onnx-int8", "onnx-int8-token")}


def test_token_backend_close_to_float32_and_batch_independent(bert):
    import onnx

    path = bert["onnx-int8-token"]._onnx.path
    assert sorted(f.name for f in path.parent.iterdir()) == ["manifest.json", "model.onnx"]
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    # 6 weight MatMuls a layer become MatMulIntegerToFloat; Q, K and V share one quantised input (4 a
    # layer); the two attention products (QK^T, AV) stay float32 MatMuls.
    assert ops.count("MatMulIntegerToFloat") == 2 * 6 and ops.count("QuantizeLinear") == 2 * 4 and ops.count("MatMul") == 2 * 2
    ref = bert["onnx"].encode_documents(TEXTS)
    got = bert["onnx-int8-token"].encode_documents(TEXTS)
    cos = (ref * got).sum(1)
    assert cos.min() >= 0.99 and np.abs(ref - got).max() > 1e-6
    gap_dyn = float(1 - (ref * bert["onnx-int8"].encode_documents(TEXTS)).sum(1).mean())
    assert 1 - cos.mean() < gap_dyn, (1 - cos.mean(), gap_dyn)
    t_ref, t_got = bert["onnx"].encode_tokens(TEXTS, False), bert["onnx-int8-token"].encode_tokens(TEXTS, False)
    assert min((a * b).sum(1).min() for a, b in zip(t_ref, t_got) if len(a)) >= 0.98
    # A text's vector does not depend on the batch (padding rows set no scale): alone == in a batch.
    alone = np.concatenate([bert["onnx-int8-token"].encode_documents([t]) for t in TEXTS[:3]])
    assert np.abs(alone - got[:3]).max() < 1e-5


def test_token_with_blockwise_and_float32_kinds(bert, tmp_path):
    """Kinds listed in blockwise go to MatMulNBits, those in float32 stay MatMul, the rest per-token int8."""
    import onnx

    out = tmp_path / "routed.onnx"
    onnx_quantize.quantize(bert["onnx"]._onnx.path, out, {**TOKEN, "blockwise": ["ffn_out"], "float32": ["attn_out"]})
    assert sorted(f.name for f in tmp_path.iterdir()) == ["routed.onnx"]  # the scratch file is removed
    nodes = onnx.load(str(out)).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("MatMulNBits") == 2 and ops.count("MatMulIntegerToFloat") == 2 * 4 and ops.count("MatMul") == 2 * 3
    assert sorted(n.name for n in nodes if n.op_type == "MatMul" and "output/dense" in n.name) == [
        f"/inner/encoder/layer.{i}/attention/output/dense/MatMul" for i in range(2)]


@pytest.mark.slow
def test_minilm_token_is_closer_than_int8_and_batch_independent(tmp_path, monkeypatch):
    """The real all-MiniLM-L6-v2: onnx-int8-token within a cosine of 0.99 of torch (SciFact passages: >= 0.998,
    benchmarks/results/encoding_speed.md), closer on average than onnx-int8, and a text's vector the same
    alone as in a padded batch (onnx-int8's moves)."""
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path))
    texts = [*TEXTS, *(t.upper() for t in TEXTS)]
    torch_v = Encoder("minilm").encode_documents(texts)
    token, int8 = Encoder("minilm", backend="onnx-int8-token"), Encoder("minilm", backend="onnx-int8")
    token_v, int8_v = token.encode_documents(texts), int8.encode_documents(texts)
    cos = (token_v * torch_v).sum(1)
    assert cos.min() >= 0.99 and 1 - cos.mean() < (1 - (int8_v * torch_v).sum(1).mean()) / 2  # smoothed: ~5x closer
    short = texts[:4]
    assert np.abs(np.concatenate([token.encode_documents([t]) for t in short]) - token_v[:4]).max() < 1e-5
    assert np.abs(np.concatenate([int8.encode_documents([t]) for t in short]) - int8_v[:4]).max() > 1e-4
