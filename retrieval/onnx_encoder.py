"""The encoder's forward pass through ONNX Runtime: an exported graph, cached once per model and backend.

:class:`~attnsift.retrieval.encoders.Encoder` takes ``backend="torch"`` (the default), ``"onnx"`` or
one of the ``"onnx-int8*"`` ones. The ONNX backends run the same tokenizer, pooling, normalisation,
length limit and prefixes as the torch path; only the transformer's forward pass (token ids -> last hidden states)
runs in ONNX Runtime on the CPU:

- ``"onnx"``: the model exported to ONNX in float32 (vectors within ~1e-5 of torch's);
- ``"onnx-int8"``: that graph with int8 weights and activations quantised per tensor at run time
  (ONNX Runtime's dynamic quantisation): fastest, vectors move (cosine to torch ~0.995);
- ``"onnx-int8-block"``: 8-bit weights and activations in blocks of input channels (``MatMulNBits``):
  vectors close to float32's (cosine ~0.999), between float32 and ``onnx-int8`` in speed;
- ``"onnx-int8-mixed"``: the FFN MatMuls in 8-bit blocks and the attention ones in dynamic int8:
  between the two int8 recipes in speed and in closeness to float32 (MiniLM: ~2.1x torch, cosine ~0.998).
- ``"onnx-int8-token"``: dynamic int8 with one activation scale per token (row) instead of per tensor,
  LayerNorm-fed inputs smoothed per channel first: 0.9x ``onnx-int8``'s speed (MiniLM: ~2.7x torch),
  vectors much closer to float32's (mean cosine ~0.999 against ~0.995) and independent of the batch a
  text is encoded in.

The int8 recipes are in :mod:`attnsift.retrieval.onnx_quantize`; speed and quality of each are in
benchmarks/results/encoding_speed.md.

The export happens once per (model identity, backend, opset, exporter versions, and for int8 the
recipe and ONNX Runtime's version): it is written
atomically to ``$ATTNSIFT_CACHE/onnx/<model>-<backend>-op<opset>-<key>/`` (``model.onnx`` and a
``manifest.json`` with its checksum) and reused. A folder whose file does not match its checksum (a
damaged or hand-edited export) is not used: it is exported again. An int8 export also records the
sha256 of the float32 export it was quantised from, and is quantised again when that has changed. The export uses PyTorch's TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``): the newer dynamo exporter needs the ``onnxscript``
package, which the ``onnx`` extra does not install.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from attnsift.errors import IndexCorruptedError, require

logger = logging.getLogger("attnsift.retrieval.encoders")

#: The encoder backends: PyTorch, ONNX Runtime in float32, ONNX Runtime int8 (four recipes).
BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-int8-block", "onnx-int8-mixed", "onnx-int8-token")
#: The ONNX opset of exported encoders.
OPSET = 17
#: Model inputs the exported graph may take (those the tokenizer gives, in this order).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_KIND = "onnx-encoder"
_FILE = "model.onnx"


def check_backend(backend: Any) -> str:
    """``backend`` as given if it is one of :data:`BACKENDS`, else a one-line ValueError listing them."""
    if not isinstance(backend, str) or backend.strip().lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend.strip().lower()


def check_threads(threads: Any) -> int | None:
    """``threads`` as an int >= 1 (a numeric string allowed), or None; else a one-line error."""
    if threads is None:
        return None
    if isinstance(threads, str) and threads.strip().isdigit():
        threads = int(threads)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 (ONNX Runtime's intra-op threads), got {threads!r}")
    return threads


def _versions(backend: str) -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from attnsift.retrieval.onnx_quantize import RECIPES, recipe_key

    out = {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__}
    if backend in RECIPES:
        out["onnxruntime"] = onnxruntime.__version__  # the quantiser's version shapes the int8 graph
        out["int8"] = recipe_key(backend)
    return out


def export_dir(identity: Mapping[str, Any], backend: str, opset: int = OPSET) -> Path:
    """The cache folder of an export (not created here).

    Parameters
    ----------
    identity : mapping
        What identifies the model's weights: name, location, weights (file sizes and modification
        times), as :func:`attnsift.retrieval.encoding_cache.model_identity` gives.
    backend : {"onnx", "onnx-int8", "onnx-int8-block", "onnx-int8-mixed", "onnx-int8-token"}
    opset : int

    Returns
    -------
    Path
        ``cache_root() / "onnx" / "<model>-<backend>-op<opset>-<key>"``; the key hashes the identity,
        backend, opset and the exporter's versions (int8: also the recipe and ONNX Runtime's version).
    """
    from attnsift.fingerprint import cache_root

    blob = json.dumps({"model": dict(identity), "backend": backend, "opset": opset, "versions": _versions(backend)},
                      sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", str(identity.get("name", "encoder")).rsplit("/", 1)[-1])[:48] or "encoder"
    return cache_root() / "onnx" / f"{label}-{backend}-op{opset}-{key}"


def _valid_export(folder: Path) -> dict | None:
    """The manifest of a complete export in ``folder`` (checksums verified), or None (logged)."""
    from attnsift.io import read_manifest

    if not folder.is_dir():
        return None
    try:
        manifest = read_manifest(folder, _KIND, what="ONNX export", fix="exporting it again")
    except IndexCorruptedError as exc:
        logger.warning("%s; exporting again", exc)
        return None
    if _FILE not in manifest.get("files", {}) or not manifest.get("inputs"):
        logger.warning("ONNX export %s lists no %s or no inputs; exporting again", folder, _FILE)
        return None
    return manifest


def _export_fp32(location: str, input_names: tuple[str, ...], path: Path, opset: int) -> None:
    """Export the model at ``location`` (last hidden state from token ids) to ``path`` in float32."""
    import torch
    import transformers

    from attnsift.progress import quiet_third_party

    quiet_third_party()
    # Eager attention: a plain graph (matmul, softmax) that traces with dynamic batch and length.
    model = transformers.AutoModel.from_pretrained(location, attn_implementation="eager").float().eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(input_names, args))).last_hidden_state

    # Two texts of different lengths: the traced graph sees padding and a mask.
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2178, 102, 0, 0, 0]])
    vocab = int(model.config.vocab_size)
    ids = ids.clamp(max=vocab - 1)
    mask = (torch.arange(6)[None, :] < torch.tensor([[6], [3]])).long()
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(example[n] for n in input_names)
    dynamic = {n: {0: "batch", 1: "length"} for n in (*input_names, "last_hidden_state")}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(_Hidden(model), args, str(path), dynamo=False, input_names=list(input_names),
                          output_names=["last_hidden_state"], dynamic_axes=dynamic, opset_version=opset,
                          do_constant_folding=True)


def ensure_export(location: str, identity: Mapping[str, Any], backend: str, input_names: tuple[str, ...],
                  opset: int = OPSET) -> Path:
    """The cached ONNX file of this model and backend, exported first if there is none (or a bad one).

    Parameters
    ----------
    location : str
        What ``from_pretrained`` loads (a folder or a cached hub id).
    identity : mapping
        The model's identity (see :func:`export_dir`).
    backend : {"onnx", "onnx-int8", "onnx-int8-block", "onnx-int8-mixed", "onnx-int8-token"}
    input_names : tuple of str
        The model inputs the tokenizer gives (a subset of :data:`INPUT_NAMES`).
    opset : int

    Returns
    -------
    Path
        ``<export folder>/model.onnx``.
    """
    from attnsift.io import atomic_dir, write_manifest

    require("onnxruntime", "onnx", purpose="the ONNX encoder backends")
    require("onnx", "onnx", purpose="exporting encoders to ONNX")
    from attnsift.retrieval import onnx_quantize

    folder = export_dir(identity, backend, opset)
    # int8 is quantised from the float32 export (itself cached: exported once for every backend).
    fp32 = ensure_export(location, identity, "onnx", input_names, opset) if backend in onnx_quantize.RECIPES else None
    source = _file_sha256(fp32.parent) if fp32 is not None else None
    manifest = _valid_export(folder)
    if manifest is not None and tuple(manifest["inputs"]) == tuple(input_names):
        if manifest.get("source_sha256") == source:
            return folder / _FILE
        logger.warning("ONNX export %s was quantised from another float32 export; quantising again", folder)
    logger.info("exporting encoder %s to ONNX (%s, opset %d) in %s", identity.get("name"), backend, opset, folder)
    with atomic_dir(folder) as tmp:
        if fp32 is None:
            _export_fp32(location, input_names, tmp / _FILE, opset)
        else:
            onnx_quantize.quantize(fp32, tmp / _FILE, onnx_quantize.recipe(backend), *_heads_and_hidden(location))
        for extra in tmp.iterdir():  # the quantiser's scratch files, if any
            if extra.name != _FILE and extra.is_file():
                extra.unlink()
        write_manifest(tmp, _KIND, backend=backend, opset=opset, inputs=list(input_names),
                       model=dict(identity), versions=_versions(backend),
                       **({"recipe": onnx_quantize.recipe(backend), "source_sha256": source} if source else {}))
    return folder / _FILE


def _heads_and_hidden(location: str) -> tuple[int, int]:
    """The model's attention heads and hidden size (what fusing its attention needs; 0: unknown)."""
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(location)
    return int(getattr(cfg, "num_attention_heads", 0) or 0), int(getattr(cfg, "hidden_size", 0) or 0)


def _file_sha256(folder: Path) -> str:
    """The sha256 of ``folder/model.onnx`` as its (just verified) manifest records it."""
    return str(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"][_FILE]["sha256"])


class OnnxForward:
    """An ONNX Runtime session giving last hidden states, ``[batch, length, dim]`` float32.

    Parameters
    ----------
    path : Path
        The exported ``model.onnx``.
    threads : int, optional
        Intra-op threads [None: ``torch.get_num_threads()``, what the torch path uses].
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = require("onnxruntime", "onnx", purpose="the ONNX encoder backends")
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only
        self.threads = int(threads)
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Last hidden states of a tokenised batch (numpy arrays or torch tensors, by input name)."""
        feed = {}
        for name in self.input_names:
            v = batch[name]
            v = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
            feed[name] = v.astype(np.int64, copy=False)
        return self.session.run(None, feed)[0]
