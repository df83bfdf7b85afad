"""int8 recipes for the ONNX encoder backends: how a float32 export becomes an int8 one.

Three recipes, one per backend (:data:`RECIPES`, part of each export's cache key):

- ``"onnx-int8"`` (``method="dynamic"``): ONNX Runtime's dynamic quantisation
  (:func:`onnxruntime.quantization.quantize_dynamic`): int8 weights with one scale per output channel,
  activations quantised to uint8 at run time with *one scale per tensor* (per batch). Fastest; the
  per-tensor activation scale is coarse where a few channels carry outliers (BERT's LayerNorm and GELU
  outputs), so vectors move (MiniLM: cosine to torch ~0.995, nDCG@10 on SciFact -0.005).
- ``"onnx-int8-block"`` (``method="blockwise"``): every constant MatMul becomes ONNX Runtime's
  ``MatMulNBits`` with 8-bit symmetric weights in blocks of ``block_size`` input channels (one scale
  per block and output channel) and ``accuracy_level=4``: activations are quantised to int8 per row
  *and block* at run time, int8 dot products (AVX-512 VNNI here) with float32 accumulation across
  blocks. An outlier channel only coarsens its own block, so vectors stay close to float32
  (MiniLM: cosine ~0.999). Slower than ``dynamic`` (more scales), faster than float32.
- ``"onnx-int8-mixed"`` (``method="mixed"``): each weight MatMul routed by its kind (:data:`KINDS`:
  attention QKV, attention output, FFN in, FFN out): the kinds in ``blockwise`` (here both FFN
  MatMuls, 2/3 of the weights) to 8-bit blocks as above, those in ``float32`` left alone, the rest (the
  attention ones) to dynamic int8. The error of dynamic int8 is spread over every kind and layer; the
  FFN MatMuls (inputs: LayerNorm and GELU outputs with outlier channels) carry most of it (MiniLM:
  1 - mean cosine to float32 0.0017 against 0.0054 for ``onnx-int8``, at ~2.1x torch's speed).
  ``fuse="bert"`` first fuses the graph with ONNX Runtime's transformer optimizer (one ``Attention``
  node per layer, which dynamic int8 turns into ``QAttention``; ``SkipLayerNormalization``,
  ``BiasGelu``, ``EmbedLayerNormalization``): measured no faster here (0.97x of the unfused graph).

- ``"onnx-int8-token"`` (``method="per_token"``): dynamic int8 with *one activation scale per row*
  (per token) instead of per tensor, built from standard ONNX ops (ONNX Runtime has no such contrib
  op): per row ``s = max|x| / 127`` (``ReduceMax``, ``ReduceMin``), ``x`` quantised by ``QuantizeLinear``
  along the rows (uint8, zero point 128: the u8 x s8 product is the one with VNNI kernels here;
  int8 activations measured 3x slower), ``MatMulIntegerToFloat`` with int8 weights (symmetric, one
  scale per output channel), then times ``s``. A token with outlier activations ([CLS], [SEP],
  punctuation) coarsens only its own row, and padding rows no longer set any scale, so a text's vectors
  do not depend on the batch it is in (they do with ``dynamic`` and ``mixed``). Kinds listed in
  ``blockwise`` go to 8-bit blocks first, those in ``float32`` stay float (as in ``mixed``).
  The inputs a LayerNorm produces (QKV and FFN-in: BERT's outlier *channels*, which per-row scales
  cannot isolate) are smoothed first (``smooth``, SmoothQuant's alpha, 0.5): divided per channel by
  ``f = amax^alpha / max|W row|^(1 - alpha)``, whose ``1 / f`` is one ``Mul`` and whose ``f`` goes into the
  weights' rows, ``amax`` from 16 seeded random token sequences through the float32 graph (a fixed,
  data-free calibration; real passages gave the same). MiniLM, 256 SciFact passages: 1 - mean cosine
  to float32 0.00105 smoothed, 0.00232 without (``onnx-int8`` 0.0054), ``smooth=None`` turns it off.

Measured per recipe on MiniLM (SciFact passages): benchmarks/results/encoding_speed.md.
"""
from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

#: The int8 backends and how each quantises the float32 export (hashed into the export's cache key).
RECIPES: dict[str, dict[str, Any]] = {
    "onnx-int8": {"method": "dynamic", "weight_type": "QInt8", "per_channel": True},
    "onnx-int8-block": {"method": "blockwise", "bits": 8, "block_size": 128, "accuracy_level": 4, "symmetric": True},
    "onnx-int8-mixed": {"method": "mixed", "fuse": None, "blockwise": ["ffn_in", "ffn_out"], "float32": [],
                        "weight_type": "QInt8", "per_channel": True,
                        "bits": 8, "block_size": 128, "accuracy_level": 4, "symmetric": True},
    "onnx-int8-token": {"method": "per_token", "activation_type": "QUInt8", "weight_type": "QInt8",
                        "blockwise": [], "float32": [], "smooth": 0.5,
                        "bits": 8, "block_size": 128, "accuracy_level": 4, "symmetric": True},
}
#: Smoothing calibration of the ``per_token`` recipe: (sequences, tokens each) of seeded random token ids.
SMOOTH_CALIBRATION = (16, 128)
#: The weight MatMuls of a BERT-like export by kind: patterns of node names (PyTorch module paths in the
#: TorchScript export; ``Attention_<i>`` is a fused attention node, its QKV projection inside).
KINDS: dict[str, str] = {
    "qkv": r"^Attention_\d+$|/attention/self/(query|key|value)/MatMul",
    "attn_out": r"/attention/output/dense/MatMul",
    "ffn_in": r"/intermediate/dense/MatMul",
    "ffn_out": r"/layer\.\d+/output/dense/MatMul",
}


def recipe(backend: str) -> dict[str, Any]:
    """The quantisation settings of an int8 ``backend`` (a copy), or a one-line ValueError."""
    if backend not in RECIPES:
        raise ValueError(f"{backend!r} is not a quantised backend; expected one of {', '.join(RECIPES)}")
    return dict(RECIPES[backend])


def recipe_key(backend: str) -> str:
    """The recipe of ``backend`` as a canonical JSON string (what cache keys hash)."""
    return json.dumps(recipe(backend), sort_keys=True)


def check_recipe(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` checked: a known method and sane numbers, else a one-line ValueError."""
    s = dict(settings)
    method = s.get("method")
    if method in ("dynamic", "mixed") and s.get("weight_type") not in ("QInt8", "QUInt8"):
        raise ValueError(f"dynamic quantisation needs weight_type 'QInt8' or 'QUInt8', got {s.get('weight_type')!r}")
    if method == "dynamic":
        return s
    if method == "per_token":
        if s.get("weight_type") != "QInt8":
            raise ValueError(f"per_token quantisation has symmetric int8 weights: weight_type must be 'QInt8', "
                             f"got {s.get('weight_type')!r}")
        if s.get("activation_type") not in ("QUInt8", "QInt8"):
            raise ValueError("per_token activation_type must be 'QUInt8' (zero point 128) or 'QInt8', "
                             f"got {s.get('activation_type')!r}")
        if s.get("fuse"):
            raise ValueError(f"per_token quantisation works on the unfused graph: fuse must be None, got {s.get('fuse')!r}")
        sm = s.get("smooth")
        if sm is not None and (isinstance(sm, bool) or not isinstance(sm, (int, float)) or not 0 < sm <= 1):
            raise ValueError(f"smooth (SmoothQuant's alpha) must be a number in (0, 1] or None, got {sm!r}")
    if method in ("mixed", "per_token"):
        groups = {g: s.get(g) or [] for g in ("blockwise", "float32")}
        for g, kinds in groups.items():
            bad = [k for k in kinds if k not in KINDS] if isinstance(kinds, (list, tuple)) else [kinds]
            if bad:
                raise ValueError(f"{g} must list MatMul kinds among {', '.join(KINDS)}, got {bad[0]!r}")
        if set(groups["blockwise"]) & set(groups["float32"]):
            raise ValueError("a MatMul kind is either blockwise or float32, not both: "
                             f"{sorted(set(groups['blockwise']) & set(groups['float32']))}")
        if method == "mixed" and s.get("fuse") not in (None, "bert"):
            raise ValueError(f"fuse must be 'bert' (ONNX Runtime's transformer optimizer) or None, got {s.get('fuse')!r}")
        if s.get("fuse") and "qkv" in groups["blockwise"]:
            raise ValueError("qkv cannot be blockwise with fuse='bert' (the fused Attention node holds the QKV "
                             "weights): leave it dynamic, put it in float32 or set fuse=None")
        if not groups["blockwise"]:
            return s
    if method in ("blockwise", "mixed", "per_token"):
        block = s.get("block_size")
        if s.get("bits") != 8:
            raise ValueError(f"blockwise quantisation here is 8-bit only, got bits={s.get('bits')!r}")
        if isinstance(block, bool) or not isinstance(block, int) or block < 16 or block & (block - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {block!r}")
        if s.get("accuracy_level") not in (0, 1, 4):
            raise ValueError(f"accuracy_level must be 0, 1 or 4 (4: int8 activations), got {s.get('accuracy_level')!r}")
        return s
    raise ValueError(f"quantisation method must be 'dynamic', 'blockwise' or 'mixed', got {method!r} "
                     "(or 'per_token': dynamic int8 with per-row activation scales)")


class _DropPreprocessHint(logging.Filter):
    """The quantiser logs a hint to the root logger on every call (pre-processing is optional)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in str(record.msg)


def quantize(src: Path, dst: Path, settings: Mapping[str, Any], num_heads: int = 0, hidden_size: int = 0) -> None:
    """Quantise the float32 ONNX file ``src`` into ``dst`` by ``settings`` (a :data:`RECIPES` entry).

    Deterministic: the same source file and settings give the same bytes. ``num_heads`` and
    ``hidden_size`` (the model's config) guide the fusion of a ``mixed`` recipe (0: read from the graph).
    Scratch files of a ``mixed`` recipe are written beside ``dst`` and removed.
    """
    s = check_recipe(settings)
    src, dst = Path(src), Path(dst)
    if s["method"] == "dynamic":
        _quantize_dynamic(src, dst, s)
    elif s["method"] == "blockwise":
        _quantize_blockwise(src, dst, s)
    elif s["method"] == "per_token":
        _quantize_per_token(src, dst, s)
    else:
        _quantize_mixed(src, dst, s, int(num_heads), int(hidden_size))


def _kind_matcher(kinds: Any) -> Any:
    """A predicate on node names: True for the MatMuls of the given :data:`KINDS`."""
    pattern = re.compile("|".join(f"(?:{KINDS[k]})" for k in kinds)) if kinds else None
    return lambda name: bool(pattern is not None and pattern.search(name))


def _quantize_mixed(src: Path, dst: Path, s: Mapping[str, Any], num_heads: int, hidden_size: int) -> None:
    """Fuse (optional), then the ``blockwise`` kinds to ``MatMulNBits``, the rest but ``float32`` to dynamic int8."""
    scratch = []
    try:
        if s.get("fuse"):
            from onnxruntime.transformers.optimizer import optimize_model

            fused = dst.with_name(dst.stem + ".fused.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
                model = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                       opt_level=1, use_gpu=False)
                model.save_model_to_file(str(fused))
            scratch.append(fused)
            src = fused
        if s.get("blockwise"):
            blocked = dst.with_name(dst.stem + ".block.onnx")
            _quantize_blockwise(src, blocked, s, select=_kind_matcher(s["blockwise"]))
            scratch.append(blocked)
            src = blocked
        _quantize_dynamic(src, dst, s, exclude=_kind_matcher(s.get("float32") or []))
    finally:
        for f in scratch:
            f.unlink(missing_ok=True)


def _quantize_dynamic(src: Path, dst: Path, s: Mapping[str, Any], exclude: Any = None) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    skip = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node if exclude(n.name)] if exclude else []

    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=getattr(QuantType, s["weight_type"]),
                             per_channel=bool(s.get("per_channel", False)), nodes_to_exclude=skip,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(hint)


def _quantize_blockwise(src: Path, dst: Path, s: Mapping[str, Any], select: Any = None) -> None:
    """Every MatMul with a constant 2-D float weight (and a name ``select`` accepts, if given) ->
    ``com.microsoft.MatMulNBits`` (8-bit blocks).

    Written here with ``onnx`` alone and ONNX Runtime's own block quantiser (the C++
    ``quantize_matmul_8bits``): ``onnxruntime.quantization.matmul_nbits_quantizer`` needs the
    ``onnx_ir`` package, which the ``onnx`` extra does not install.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.capi._pybind_state import quantize_matmul_8bits

    block, sym, level = int(s["block_size"]), bool(s.get("symmetric", True)), int(s.get("accuracy_level", 0))
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes, added = [], []
    for node in graph.node:
        chosen = node.op_type == "MatMul" and len(node.input) == 2 and (select is None or select(node.name))
        w_name = node.input[1] if chosen else None
        w = numpy_helper.to_array(inits[w_name]) if w_name in inits else None
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            nodes.append(node)
            continue
        k, n = w.shape
        blocks = -(-k // block)
        w = np.ascontiguousarray(np.pad(w, ((0, blocks * block - k), (0, 0))))
        packed = np.zeros((n, blocks, block), dtype=np.uint8)
        zero = np.zeros((n, blocks), dtype=np.uint8)
        scales = np.zeros((n, blocks), dtype=np.float32)
        quantize_matmul_8bits(packed, w, scales, zero, block, n, k, sym)
        inputs = [node.input[0], f"{w_name}_q8", f"{w_name}_scales"]
        added += [numpy_helper.from_array(packed, inputs[1]), numpy_helper.from_array(scales, inputs[2])]
        if not sym:
            inputs.append(f"{w_name}_zero_points")
            added.append(numpy_helper.from_array(zero, inputs[3]))
        attrs: dict[str, Any] = {"K": k, "N": n, "bits": 8, "block_size": block}
        if level:
            attrs["accuracy_level"] = level
        nodes.append(helper.make_node("MatMulNBits", inputs, list(node.output), name=f"{node.name}_Q8",
                                      domain="com.microsoft", **attrs))
        uses[w_name] -= 1
    keep = [i for i in graph.initializer if uses.get(i.name, 1) > 0]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + added)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))


def _quantize_per_token(src: Path, dst: Path, s: Mapping[str, Any]) -> None:
    """The ``blockwise`` kinds to ``MatMulNBits``, then every other constant-weight MatMul but the
    ``float32`` kinds to per-row dynamic int8 (:func:`_per_token_graph`)."""
    scratch = None
    try:
        if s.get("blockwise"):
            scratch = dst.with_name(dst.stem + ".block.onnx")
            _quantize_blockwise(src, scratch, s, select=_kind_matcher(s["blockwise"]))
            src = scratch
        _per_token_graph(src, dst, unsigned=s["activation_type"] == "QUInt8",
                         exclude=_kind_matcher(s.get("float32") or []), smooth=s.get("smooth"))
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)


def _smoothing(model: Any, inits: dict, alpha: float) -> dict[str, Any]:
    """Per-channel smoothing factors (SmoothQuant) for the MatMul inputs a LayerNormalization produces (BERT's
    outlier channels sit there): ``f = amax^alpha / max|W row|^(1 - alpha)``, ``amax`` the channel's largest
    magnitude over :data:`SMOOTH_CALIBRATION` seeded random token sequences run through the float32 graph (the
    outlier channels show on any input: calibrating on real passages gave the same accuracy), ``max|W row|`` over
    every constant-weight MatMul reading that input; ``{input name: f}`` (float32 ``[K]``, geometric mean 1)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    rows: dict[str, Any] = {}
    for n in graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and producer.get(n.input[0]) is not None \
                and producer[n.input[0]].op_type == "LayerNormalization":
            w = np.abs(numpy_helper.to_array(inits[n.input[1]]))
            if w.ndim == 2:
                rows[n.input[0]] = np.maximum(rows.get(n.input[0], 0), w.max(axis=1))
    ids_name = next((i.name for i in graph.input if i.name == "input_ids"), None)
    vocab = next((numpy_helper.to_array(inits[n.input[0]]).shape[0] for n in graph.node
                  if n.op_type == "Gather" and n.input[1] == ids_name and n.input[0] in inits), None)
    if not rows or vocab is None:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in rows)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    n, length = SMOOTH_CALIBRATION
    ids = np.random.default_rng(0).integers(min(1000, vocab // 2), vocab, size=(n, length), dtype=np.int64)
    feed = {i.name: ids if i.name == ids_name else
            (np.ones_like(ids) if "mask" in i.name else np.zeros_like(ids)) for i in sess.get_inputs()}
    out = {}
    for x, act in zip(rows, sess.run(list(rows), feed)):
        amax = np.maximum(np.abs(act.reshape(-1, act.shape[-1])).max(axis=0), 1e-8)
        f = amax**alpha / np.maximum(rows[x], 1e-8) ** (1 - alpha)
        out[x] = np.clip(f / np.exp(np.log(f).mean()), 1e-4, 1e4).astype(np.float32)
    return out


def _per_token_graph(src: Path, dst: Path, unsigned: bool, exclude: Any, smooth: float | None = None) -> None:
    """Rewrite each ``MatMul(x, W)`` with a constant 2-D float32 ``W`` (and a name ``exclude`` rejects) as

    ``x2 = Reshape(x, [-1, K])``; ``s = max(ReduceMax(x2), -ReduceMin(x2), tiny) / 127`` (one scale per
    row, two read-only passes); ``q = QuantizeLinear(x2, s, zero, axis=0)`` (uint8 with zero 128, or
    int8 with zero 0); ``y = MatMulIntegerToFloat(q, Wq, 1, w_scale, zero) * s[:, None]`` (ONNX Runtime's
    contrib op: the int8 product and the per-column weight scale in one pass) reshaped to ``x``'s
    leading shape + ``[N]``, with ``Wq = round(W / w_scale)`` int8 and ``w_scale = max|W[:, n]| / 127``.
    MatMuls sharing an input (Q, K, V) share its quantisation. Written with ``onnx`` alone.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ValueError(f"per_token quantisation needs an ONNX opset >= 13 (per-axis QuantizeLinear), got {opset}")
    inits = {i.name: i for i in graph.initializer}
    zdtype = np.uint8 if unsigned else np.int8
    consts: dict[str, Any] = {}

    def const(name: str, value: Any) -> str:
        if name not in consts:
            consts[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        return helper.make_node(op, inputs, [output], name=output + "_node", **attrs)

    def reduce(op: str, x: str, output: str) -> Any:  # over the last axis (an input from opset 18 on)
        if opset >= 18:
            return node(op, [x, const("ptq_axes", np.array([-1], np.int64))], output, keepdims=0)
        return node(op, [x], output, axes=[-1], keepdims=0)

    factors = _smoothing(model, inits, smooth) if smooth else {}
    nodes, quantised = [], {}
    for n in graph.node:
        w = numpy_helper.to_array(inits[n.input[1]]) if n.op_type == "MatMul" and n.input[1] in inits else None
        if w is None or w.ndim != 2 or w.dtype != np.float32 or (exclude is not None and exclude(n.name)):
            nodes.append(n)
            continue
        k, cols = w.shape
        x = n.input[0]
        p = f"{x}_ptq{k}"
        zero = const("ptq_zero", np.array(128 if unsigned else 0, zdtype))
        f = factors.get(x)
        if p not in quantised:
            nodes.append(node("Reshape", [x, const(f"ptq_rows{k}", np.array([-1, k], np.int64))],
                              p + ("_x2" if f is None else "_x2raw")))
            if f is not None:  # x / f per channel; the weights' rows are multiplied by f below
                nodes.append(node("Mul", [p + "_x2raw", const(p + "_invf", (1 / f).astype(np.float32))], p + "_x2"))
            nodes += [
                reduce("ReduceMax", p + "_x2", p + "_max"), reduce("ReduceMin", p + "_x2", p + "_min"),
                node("Neg", [p + "_min"], p + "_negmin"),
                node("Max", [p + "_max", p + "_negmin", const("ptq_tiny", np.array(1e-30, np.float32))], p + "_amax"),
                node("Div", [p + "_amax", const("ptq_127", np.array(127.0, np.float32))], p + "_scale"),
                node("Shape", [p + "_scale"], p + "_nrows"),
                node("Expand", [zero, p + "_nrows"], p + "_zeros"),
                node("QuantizeLinear", [p + "_x2", p + "_scale", p + "_zeros"], p + "_q", axis=0),
                node("Unsqueeze", [p + "_scale", const("ptq_axis1", np.array([1], np.int64))], p + "_scol"),
                node("Shape", [x], p + "_xshape"),
                node("Slice", [p + "_xshape", const("ptq_0", np.array([0], np.int64)),
                               const("ptq_m1", np.array([-1], np.int64))], p + "_lead"),
            ]
            quantised[p] = True
        if f is not None:
            w = (w * f[:, None]).astype(np.float32)
        w_scale = np.abs(w).max(axis=0) / np.float32(127.0)
        w_scale = np.where(w_scale > 0, w_scale, np.float32(1.0)).astype(np.float32)
        w_q = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
        wname, o = n.input[1], n.output[0]
        consts[wname + "_i8"] = numpy_helper.from_array(w_q, wname + "_i8")
        consts[wname + "_wscale"] = numpy_helper.from_array(w_scale, wname + "_wscale")
        nodes += [
            node("MatMulIntegerToFloat", [p + "_q", wname + "_i8", const("ptq_one", np.array(1.0, np.float32)),
                                          wname + "_wscale", zero], o + "_qw", domain="com.microsoft"),
            node("Mul", [o + "_qw", p + "_scol"], o + "_2d"),
            node("Concat", [p + "_lead", const(f"ptq_cols{cols}", np.array([cols], np.int64))], o + "_shape", axis=0),
            helper.make_node("Reshape", [o + "_2d", o + "_shape"], [o], name=n.name + "_per_token"),
        ]
    used = {i for n in nodes for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + [consts[c] for c in sorted(consts)])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
