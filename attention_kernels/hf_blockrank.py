"""transformers integration for BlockRank: the block-sparse mask and the scoring-layer read-out.

``ATTN_NAME`` ("attnsift_blockrank") is registered with transformers' ``AttentionInterface``. No mask
builder is registered for it on purpose: transformers then passes ``attention_mask=None`` (it never
materialises a T x T mask) and the structure comes from the block offsets of the active
:class:`BlockRankCapture`, set with :func:`capturing`.

Inside a :func:`capturing` block every layer runs :func:`~attnsift.attention_kernels.block_sparse.api.block_sparse_attention`
(prefix block causal; each document block sees the prefix and itself; the last block sees everything),
and at the scoring layer the post-RoPE queries of the scoring rows and the post-RoPE keys of every
token are kept. With ``early_exit=True`` the forward pass stops right there (:class:`ScoringExit`), so
the scoring layer's attention output, the layers above it and the LM head are never computed.

Outside a :func:`capturing` block the function is plain SDPA, so a model left switched to this
implementation still works.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

ATTN_NAME = "attnsift_blockrank"
_ACTIVE: contextvars.ContextVar["BlockRankCapture | None"] = contextvars.ContextVar("attnsift_blockrank", default=None)
_REGISTERED = False


class ScoringExit(Exception):
    """Raised after the scoring layer's queries and keys are captured, to skip the rest of the model."""


@dataclass
class BlockRankCapture:
    """Inputs and outputs of one BlockRank forward pass (batch size 1).

    Attributes
    ----------
    block_offsets : Tensor
        [B+1] int64 (CPU): block 0 = instruction + query, 1..B-2 = documents, B-1 = last block.
    scoring_layer : int
        Index of the decoder layer whose attention is read.
    query_rows : Tensor
        [P] int64 token indices of the scoring rows (the last two tokens at inference).
    early_exit : bool
        Stop the forward pass after the capture (inference); False runs the whole model (training,
        tests).
    impl : str
        ``impl`` of :func:`block_sparse_attention` for every layer.
    q, k : Tensor or None
        Captured at the scoring layer: q [P, Hq, D] and k [T, Hk, D], post-RoPE, in the model dtype.
    scaling : float or None
        The layer's logit scale (``module.scaling``; 1/sqrt(D) for Llama, other values for Gemma).
    extra_layers : tuple of int
        Further layers whose scoring-row queries and keys are kept in ``per_layer`` (one pass reads a
        whole layer curve); the early exit happens after the highest of them and ``scoring_layer``.
    per_layer : dict
        ``{layer: (q, k, scaling)}`` for ``scoring_layer`` and every extra layer.
    """

    block_offsets: "Tensor"
    scoring_layer: int
    query_rows: "Tensor"
    early_exit: bool = True
    impl: str = "auto"
    q: "Tensor | None" = None
    k: "Tensor | None" = None
    scaling: float | None = None
    extra_layers: tuple = ()
    per_layer: dict = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.per_layer is None:
            self.per_layer = {}

    @property
    def last_layer(self) -> int:
        return max((self.scoring_layer, *self.extra_layers))


def register() -> str:
    """Register :data:`ATTN_NAME` with transformers (idempotent); returns the name."""
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_NAME, blockrank_attention_forward)
        _REGISTERED = True
    return ATTN_NAME


@contextlib.contextmanager
def capturing(model: Any, capture: BlockRankCapture) -> Iterator[BlockRankCapture]:
    """Switch ``model`` to the BlockRank attention and activate ``capture`` for the block.

    The previous attention implementation is restored on exit: models are cached and shared between
    rerankers (ICR switches the same model to its own implementation).
    """
    name = register()
    prev = model.config._attn_implementation
    model.set_attn_implementation(name)
    token = _ACTIVE.set(capture)
    try:
        yield capture
    finally:
        _ACTIVE.reset(token)
        model.set_attn_implementation(prev)


def blockrank_attention_forward(
    module: Any,
    query: "Tensor",
    key: "Tensor",
    value: "Tensor",
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple["Tensor", None]:
    """The registered attention function.

    Parameters
    ----------
    module : the attention module (``layer_idx`` and ``scaling`` are read from it)
    query : Tensor [1, Hq, T, D], post-RoPE
    key, value : Tensor [1, Hk, T, D], post-RoPE keys
    attention_mask : ignored inside :func:`capturing` (None: no mask builder is registered)
    scaling : float, the logit scale

    Returns
    -------
    (attn_output [1, T, Hq, D], None)
    """
    cap = _ACTIVE.get()
    if cap is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"BlockRank runs one prompt at a time (batch size 1), got batch size {query.shape[0]}")
    if kwargs.get("sliding_window") is not None:
        # A sliding window would further cut what the last block sees; BlockRank's scores assume full
        # attention over the blocks (Mistral v0.3 and Llama have none).
        raise ValueError(
            "BlockRank does not support sliding-window attention layers (e.g. Gemma 3 local layers); "
            "use a model with full attention such as SmolLM2, Llama, Mistral or Qwen"
        )
    if kwargs.get("softcap") is not None:
        raise ValueError("BlockRank does not support attention logit soft-capping (e.g. Gemma 2)")
    if dropout and module.training:
        raise ValueError("BlockRank attention has no dropout; set the model's attention_dropout to 0")
    if scaling is None:
        scaling = getattr(module, "scaling", None)
    layer = getattr(module, "layer_idx", None)
    if layer == cap.scoring_layer or layer in cap.extra_layers:
        rows = cap.query_rows.to(query.device)
        q = query[0].index_select(1, rows).transpose(0, 1)  # [P, Hq, D]
        k = key[0].transpose(0, 1)  # [T, Hk, D]
        sc = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
        cap.per_layer[layer] = (q, k, sc)
        if layer == cap.scoring_layer:
            cap.q, cap.k, cap.scaling = q, k, sc
        if cap.early_exit and layer == cap.last_layer:
            raise ScoringExit()
    from attnsift.attention_kernels.block_sparse.api import block_sparse_attention

    out, _ = block_sparse_attention(query[0], key[0], value[0], cap.block_offsets, scale=scaling, impl=cap.impl)
    return out.transpose(0, 1).unsqueeze(0), None  # [1, T, Hq, D]


def run_capture(model: Any, input_ids: "Tensor", position_ids: "Tensor", capture: BlockRankCapture, **forward_kwargs: Any) -> Any:
    """Run ``model`` on one prompt under the BlockRank mask, filling ``capture``.

    Parameters
    ----------
    model : a transformers causal LM (or its decoder)
    input_ids, position_ids : Tensor [T] int64
    capture : BlockRankCapture

    Returns
    -------
    The model output, or None after an early exit.
    """
    import torch

    ids = input_ids.reshape(1, -1).to(model.device)
    pos = position_ids.reshape(1, -1).to(model.device)
    with capturing(model, capture):
        try:
            with torch.inference_mode(not torch.is_grad_enabled()):
                out = model(input_ids=ids, position_ids=pos, use_cache=False, **forward_kwargs)
        except ScoringExit:
            out = None
    if capture.q is None:
        raise RuntimeError(
            f"the scoring layer {capture.scoring_layer} was never reached: the model did not call the "
            "registered attention function for it (does this architecture dispatch through AttentionInterface?)"
        )
    return out


def document_scores(capture: BlockRankCapture, impl: str = "auto") -> "Tensor":
    """BlockRank score per document from a filled capture.

    The scoring rows' logits against every key, re-softmaxed over the document blocks' tokens only,
    averaged over heads and rows and summed per document.

    Returns
    -------
    Tensor [B-2] float32, in prompt (block) order.
    """
    from attnsift.attention_kernels.segment_mass.api import segment_mass

    if capture.q is None or capture.k is None:
        raise RuntimeError("document_scores: the capture is empty; run run_capture first")
    off = capture.block_offsets[1:-1]  # document blocks are contiguous: segment s = block s+1
    res = segment_mass(capture.q, capture.k, off, scale=capture.scaling, softmax_over="segments", impl=impl)
    return res.segment_mass.mean(dim=(0, 1))  # [S]


def head_document_scores(capture: BlockRankCapture, impl: str = "auto") -> dict[int, "Tensor"]:
    """Per captured layer, the BlockRank score per head and document: ``{layer: [Hq, S]}`` (prompt
    order; rows averaged). The mean over heads is :func:`document_scores` of that layer."""
    from attnsift.attention_kernels.segment_mass.api import segment_mass

    if not capture.per_layer:
        raise RuntimeError("head_document_scores: the capture is empty; run run_capture first")
    off = capture.block_offsets[1:-1]
    out = {}
    for layer, (q, k, sc) in sorted(capture.per_layer.items()):
        res = segment_mass(q, k, off, scale=sc, softmax_over="segments", impl=impl)
        out[layer] = res.segment_mass.mean(dim=0).float()  # [Hq, S]
    return out
