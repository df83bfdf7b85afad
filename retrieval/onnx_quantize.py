"""int8 recipes for the ONNX encoder backends: how a float32 export becomes an int8 one.

Two recipes, one per backend (:data:`RECIPES`, part of each export's cache key):

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

Measured per recipe on MiniLM (SciFact passages): benchmarks/results/encoding_speed.md.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Mapping

#: The int8 backends and how each quantises the float32 export (hashed into the export's cache key).
RECIPES: dict[str, dict[str, Any]] = {
    "onnx-int8": {"method": "dynamic", "weight_type": "QInt8", "per_channel": True},
    "onnx-int8-block": {"method": "blockwise", "bits": 8, "block_size": 128, "accuracy_level": 4, "symmetric": True},
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
    if method == "dynamic":
        if s.get("weight_type") not in ("QInt8", "QUInt8"):
            raise ValueError(f"dynamic quantisation needs weight_type 'QInt8' or 'QUInt8', got {s.get('weight_type')!r}")
        return s
    if method == "blockwise":
        block = s.get("block_size")
        if s.get("bits") != 8:
            raise ValueError(f"blockwise quantisation here is 8-bit only, got bits={s.get('bits')!r}")
        if isinstance(block, bool) or not isinstance(block, int) or block < 16 or block & (block - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {block!r}")
        if s.get("accuracy_level") not in (0, 1, 4):
            raise ValueError(f"accuracy_level must be 0, 1 or 4 (4: int8 activations), got {s.get('accuracy_level')!r}")
        return s
    raise ValueError(f"quantisation method must be 'dynamic' or 'blockwise', got {method!r}")


class _DropPreprocessHint(logging.Filter):
    """The quantiser logs a hint to the root logger on every call (pre-processing is optional)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in str(record.msg)


def quantize(src: Path, dst: Path, settings: Mapping[str, Any]) -> None:
    """Quantise the float32 ONNX file ``src`` into ``dst`` by ``settings`` (a :data:`RECIPES` entry).

    Deterministic: the same source file and settings give the same bytes.
    """
    s = check_recipe(settings)
    if s["method"] == "dynamic":
        _quantize_dynamic(Path(src), Path(dst), s)
    else:
        _quantize_blockwise(Path(src), Path(dst), s)


def _quantize_dynamic(src: Path, dst: Path, s: Mapping[str, Any]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=getattr(QuantType, s["weight_type"]),
                             per_channel=bool(s.get("per_channel", False)),
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(hint)


def _quantize_blockwise(src: Path, dst: Path, s: Mapping[str, Any]) -> None:
    """Every MatMul with a constant 2-D float weight -> ``com.microsoft.MatMulNBits`` (8-bit blocks).

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
        w_name = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
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
