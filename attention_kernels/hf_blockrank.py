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

Families whose attention adds to the plain softmax are computed exactly, not refused. A layer with logit
soft-capping (Gemma 2), attention sinks (gpt-oss), a sliding window shorter than the prompt (Mistral,
Mixtral, Starcoder2, the local layers of Gemma 2/3 and Cohere 2) or values of another head dim than the
keys (DeepSeek's latent attention) runs :func:`masked_attention`: the BlockRank mask intersected with
the window over token distance (``i - j < window``, as transformers builds it), rows in chunks, so
memory is ``chunk x T`` per head. The scoring read-out applies the same soft-capping and window; the
sinks cancel there (the scores are a re-softmax over the document tokens).

Outside a :func:`capturing` block the function is plain attention (SDPA, or the model's eager attention
where SDPA cannot apply it), so a model left switched to this implementation still works.
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
    softcap : float or None
        The model's attention logit soft-capping (Gemma 2), seen at the captured layers.
    windows : dict
        ``{layer: sliding window or None}`` for every captured layer.
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
    softcap: float | None = None
    windows: dict = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.per_layer is None:
            self.per_layer = {}
        if self.windows is None:
            self.windows = {}

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
        from attnsift.attention_kernels.hf import plain_attention

        return plain_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"BlockRank runs one prompt at a time (batch size 1), got batch size {query.shape[0]}")
    from attnsift.attention_kernels.hf import attention_sinks

    sinks = attention_sinks(module, kwargs)
    softcap = kwargs.get("softcap")
    window = kwargs.get("sliding_window")
    attention_chunk = layer_attention_chunk(module)
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
        cap.windows[layer] = int(window) if window is not None else None
        cap.softcap = float(softcap) if softcap is not None else None
        if layer == cap.scoring_layer:
            cap.q, cap.k, cap.scaling = q, k, sc
        if cap.early_exit and layer == cap.last_layer:
            raise ScoringExit()
    # The block-sparse kernels take keys and values of one head dim; DeepSeek's latent attention has others.
    if (softcap is not None or sinks is not None or (window is not None and window < query.shape[2])
            or (attention_chunk is not None and attention_chunk < query.shape[2]) or value.shape[-1] != key.shape[-1]):
        out = masked_attention(query[0], key[0], value[0], cap.block_offsets, scaling, softcap=softcap, window=window,
                               sinks=sinks, attention_chunk=attention_chunk)
    else:
        from attnsift.attention_kernels.block_sparse.api import block_sparse_attention

        out, _ = block_sparse_attention(query[0], key[0], value[0], cap.block_offsets, scale=scaling, impl=cap.impl)
    return out.transpose(0, 1).unsqueeze(0), None  # [1, T, Hq, D]


def layer_attention_chunk(module: Any) -> int | None:
    """The attention chunk of ``module``'s layer (Llama 4's ``chunked_attention`` layers: a token sees only the
    keys of its own ``attention_chunk_size``-token chunk, by token index, as transformers masks it); None when
    the layer attends to everything before it."""
    config = getattr(module, "config", None)
    layer = getattr(module, "layer_idx", None)
    types = getattr(config, "layer_types", None) or ()
    if layer is None or layer >= len(types) or types[layer] != "chunked_attention":
        return None
    size = getattr(config, "attention_chunk_size", None)
    return int(size) if size else None


def masked_attention(q: "Tensor", k: "Tensor", v: "Tensor", block_offsets: "Tensor", scale: float | None,
                     softcap: float | None = None, window: int | None = None, sinks: "Tensor | None" = None,
                     chunk: int = 512, attention_chunk: int | None = None) -> "Tensor":
    """Attention under the BlockRank mask with logit soft-capping, a sliding window and sinks, in float32.

    Parameters
    ----------
    q : Tensor [Hq, T, D]
    k : Tensor [Hk, T, D] (GQA: query head h reads kv head ``h // (Hq // Hk)``)
    v : Tensor [Hk, T, Dv]
    block_offsets : Tensor [B+1] int64, as for :func:`block_sparse_attention`
    softcap : float, optional     the scaled logits ``s`` become ``softcap * tanh(s / softcap)``
    window : int, optional        row i sees keys ``j > i - window`` only (transformers' sliding window)
    sinks : Tensor [Hq], optional one extra logit per head in every denominator, attending to nothing (gpt-oss)
    chunk : int                   query rows per step (memory ``Hq x chunk x T``)
    attention_chunk : int, optional  row i sees keys ``j // attention_chunk == i // attention_chunk`` only (Llama 4)

    Returns
    -------
    Tensor [Hq, T, Dv] in q's dtype (Dv: the values' head dim, which may differ from D).
    """
    import torch

    Hq, T, D = q.shape
    scale = D ** -0.5 if scale is None else float(scale)
    groups = Hq // k.shape[0]
    kf = k.float().repeat_interleave(groups, dim=0) if groups > 1 else k.float()  # [Hq, T, D]
    vf = v.float().repeat_interleave(groups, dim=0) if groups > 1 else v.float()
    off = block_offsets.to(q.device)
    block = torch.bucketize(torch.arange(T, device=q.device), off[1:], right=True)  # [T] block of each token
    last = off.numel() - 2
    j = torch.arange(T, device=q.device)
    out = torch.empty(Hq, T, v.shape[-1], dtype=torch.float32, device=q.device)
    for lo in range(0, T, chunk):
        i = torch.arange(lo, min(lo + chunk, T), device=q.device)
        bi = block[i][:, None]
        allowed = (j[None, :] <= i[:, None]) & ((block[None, :] == bi) | (block[None, :] == 0) | (bi == last))
        if window is not None:
            allowed &= j[None, :] > i[:, None] - int(window)
        if attention_chunk is not None:
            allowed &= (j[None, :] // int(attention_chunk)) == (i[:, None] // int(attention_chunk))
        logits = torch.matmul(q[:, lo:lo + len(i)].float(), kf.transpose(1, 2)) * scale  # [Hq, C, T]
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        logits = logits.masked_fill(~allowed, float("-inf"))
        if sinks is not None:
            sink = sinks.float().to(q.device)[:, None, None].expand(Hq, len(i), 1)
            probs = torch.softmax(torch.cat([logits, sink], dim=-1), dim=-1)[..., :-1]
        else:
            probs = torch.softmax(logits, dim=-1)
        out[:, lo:lo + len(i)] = torch.matmul(probs, vf)
    return out.to(q.dtype)


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
    res = segment_mass(capture.q, capture.k, off, scale=capture.scaling, softmax_over="segments", impl=impl,
                       **_row_limits(capture, capture.scoring_layer))
    return res.segment_mass.mean(dim=(0, 1))  # [S]


def _row_limits(capture: BlockRankCapture, layer: int) -> dict:
    """``segment_mass`` keywords that apply the layer's soft-capping and sliding window to the scoring rows."""
    out: dict = {"softcap": capture.softcap}
    window = capture.windows.get(layer)
    if window is not None:
        import torch

        rows = capture.query_rows.to(capture.q.device)
        if bool((rows - window + 1 > capture.block_offsets[1].item()).any()):
            raise ValueError(f"BlockRank: scoring layer {layer} is a sliding-window layer (window {window}) that does "
                             "not reach back to the first document; score at a full-attention layer (scoring_layer=)")
        out["q_positions"] = rows
        out["key_start"] = torch.clamp(rows - window + 1, min=0)
    return out


def head_document_scores(capture: BlockRankCapture, impl: str = "auto") -> dict[int, "Tensor"]:
    """Per captured layer, the BlockRank score per head and document: ``{layer: [Hq, S]}`` (prompt
    order; rows averaged). The mean over heads is :func:`document_scores` of that layer."""
    from attnsift.attention_kernels.segment_mass.api import segment_mass

    if not capture.per_layer:
        raise RuntimeError("head_document_scores: the capture is empty; run run_capture first")
    off = capture.block_offsets[1:-1]
    out = {}
    for layer, (q, k, sc) in sorted(capture.per_layer.items()):
        res = segment_mass(q, k, off, scale=sc, softmax_over="segments", impl=impl, **_row_limits(capture, layer))
        out[layer] = res.segment_mass.mean(dim=0).float()  # [Hq, S]
    return out
