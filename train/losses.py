"""The BlockRank training objective for one prompt: ``L = L_lm + lambda * L_aux``.

- ``L_lm``: cross-entropy of the relevant documents' IDs as the model would write them after
  ``Final Answer: [`` (e.g. ``3, 7]``), teacher-forced: the answer tokens are appended to the last
  block, whose attention already sees every block.
- ``L_aux``: multi-positive InfoNCE over the BlockRank document scores at the scoring layer,
  ``-log(sum_rel exp(s/tau) / sum_all exp(s/tau))``. The scores are computed here, differentiably, from
  the scoring layer's post-RoPE queries (last ``query_positions`` prompt tokens) and keys (every token),
  exactly as at inference (:func:`attnsift.attention_kernels.hf_blockrank.document_scores`): logits
  ``q.k * scale`` re-softmaxed over the document tokens only, mean over heads and rows, sum per document.

The forward pass runs under the same block-sparse attention as inference
(:func:`attnsift.attention_kernels.hf_blockrank.capturing`), whose PyTorch reference is plain
differentiable torch; gradient checkpointing recomputes layers under the same mask.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

from attnsift.train.blockrank_data import EncodedExample

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["ATTN_IMPLS", "info_nce", "differentiable_document_scores", "enable_gradient_checkpointing",
           "resolve_attn_impl", "example_losses"]

ATTN_IMPLS = ("auto", "reference", "flex", "dense")


def info_nce(scores: "Tensor", positive: "Tensor", tau: float) -> "Tensor":
    """Multi-positive InfoNCE: ``-log(sum_pos exp(s/tau) / sum_all exp(s/tau))``.

    Parameters
    ----------
    scores : Tensor
        [N] document scores.
    positive : Tensor
        [N] bool, True for relevant documents (at least one).
    tau : float
        Temperature.

    Returns
    -------
    Tensor
        Scalar float32 (log-sum-exp form, stable for small tau).
    """
    import torch

    if scores.dim() != 1 or positive.shape != scores.shape:
        raise ValueError(f"info_nce: scores and positive must both be [N], got {tuple(scores.shape)} and {tuple(positive.shape)}")
    positive = positive.to(device=scores.device, dtype=torch.bool)
    if not bool(positive.any()):
        raise ValueError("info_nce needs at least one positive document")
    z = scores.float() / float(tau)
    return torch.logsumexp(z, dim=0) - torch.logsumexp(z[positive], dim=0)


def differentiable_document_scores(q: "Tensor", k: "Tensor", block_offsets: Sequence[int] | "Tensor",
                                   scale: float, softcap: float | None = None) -> "Tensor":
    """BlockRank scores from the scoring layer's queries and keys, keeping the autograd graph.

    Same definition as :func:`attnsift.attention_kernels.hf_blockrank.document_scores` (which runs
    the forward-only segment-mass kernel): the scoring rows' logits against the document tokens,
    softmaxed over those tokens, averaged over heads and rows, summed per document.

    Parameters
    ----------
    q : Tensor
        [P, Hq, D] post-RoPE queries of the scoring rows.
    k : Tensor
        [T, Hk, D] post-RoPE keys of every token, ``Hq % Hk == 0`` (head h reads key head h // (Hq/Hk)).
    block_offsets : sequence of int or Tensor
        [B+1] block offsets; blocks 1..B-2 are the documents (contiguous).
    scale : float
        Logit scale of the layer.
    softcap : float, optional
        Attention logit soft-capping of the layer (Gemma 2): the scaled logits ``s`` become
        ``softcap * tanh(s / softcap)`` before the softmax, as at inference.

    Returns
    -------
    Tensor
        [B-2] float32 scores in prompt (block) order; they sum to 1.
    """
    import torch

    off = [int(x) for x in (block_offsets.tolist() if hasattr(block_offsets, "tolist") else block_offsets)]
    d0, d1 = off[1], off[-2]
    P, Hq, D = q.shape
    Hk = k.shape[1]
    G = Hq // Hk
    kd = k[d0:d1].float()  # [Td, Hk, D]
    qf = q.float().reshape(P, Hk, G, D)
    logits = torch.einsum("phgd,thd->phgt", qf, kd) * scale  # [P, Hk, G, Td]
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    probs = torch.softmax(logits, dim=-1).mean(dim=(0, 1, 2))  # [Td]
    lengths = [off[b + 1] - off[b] for b in range(1, len(off) - 2)]
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=probs.device),
                                  torch.tensor(lengths, device=probs.device))
    return torch.zeros(len(lengths), device=probs.device, dtype=probs.dtype).index_add(0, seg, probs)


def _checkpoint_context_fn() -> tuple[Any, Any]:
    """``context_fn`` of torch's non-reentrant checkpoint: the recompute of a layer in the backward pass
    runs under the BlockRank capture that was active in its forward pass.

    Without it the recompute would find no active capture (it may run on autograd's device thread,
    which does not share our context variables) and fall back to plain SDPA: silently wrong gradients.
    The recompute writes into a throwaway copy, so the capture read by the loss is left alone.
    """
    from attnsift.attention_kernels import hf_blockrank
    from attnsift.attention_kernels.hf import activate

    cap = hf_blockrank._ACTIVE.get()
    replay = dataclasses.replace(cap) if cap is not None else None
    return contextlib.nullcontext(), activate(hf_blockrank._ACTIVE, replay)


def enable_gradient_checkpointing(model: Any) -> None:
    """Checkpoint every decoder layer (non-reentrant, BlockRank-aware recompute)."""
    kwargs = {"use_reentrant": False, "context_fn": _checkpoint_context_fn}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def resolve_attn_impl(impl: str, device: Any) -> str:
    # "auto" is the blockwise PyTorch reference on every device: it is differentiable and its memory is
    # linear in the number of documents. FlexAttention (compiled on CUDA, one compile per sequence
    # length) stays an explicit choice until its backward is checked on a GPU.
    return "reference" if impl == "auto" else impl


def example_losses(model: Any, enc: EncodedExample, *, scoring_layer: int, lambda_aux: float, tau: float,
                   attn_impl: str = "reference", backward_scale: float | None = None,
                   autocast_dtype: Any = None) -> dict[str, Any]:
    """Forward one prompt under the BlockRank mask; the losses; optionally their backward pass.

    Parameters
    ----------
    model : a transformers causal LM (one prompt, batch size 1)
    enc : EncodedExample
    scoring_layer : int
    lambda_aux, tau : float
    attn_impl : str
        A differentiable ``block_sparse_attention`` impl (``reference``, ``flex``, ``dense``).
    backward_scale : float, optional
        When given, ``(loss * backward_scale).backward()`` runs here, inside the capture (gradient
        checkpointing recomputes layers during it, under the same mask).
    autocast_dtype : torch.dtype, optional
        Run the forward under autocast (bfloat16 on CUDA).

    Returns
    -------
    dict
        ``loss``, ``l_lm``, ``l_aux`` (scalar tensors; detached after a backward) and ``scores`` ([N]
        document scores, prompt order, detached).
    """
    import torch
    import torch.nn.functional as F

    from attnsift.attention_kernels.hf_blockrank import BlockRankCapture, capturing

    device = next(model.parameters()).device
    cap = BlockRankCapture(
        block_offsets=torch.tensor(enc.block_offsets, dtype=torch.int64),
        scoring_layer=int(scoring_layer),
        query_rows=torch.tensor(enc.query_rows, dtype=torch.int64),
        early_exit=False,
        impl=attn_impl,
    )
    ids = torch.tensor(enc.input_ids, dtype=torch.int64, device=device)[None]
    pos = torch.tensor(enc.position_ids, dtype=torch.int64, device=device)[None]
    A = enc.answer_tokens
    targets = ids[0, enc.prompt_tokens:]  # [A]
    amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with capturing(model, cap):
        with amp:
            # logits only where the answer is predicted: the last prompt token .. the second-to-last token
            out = model(input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=A + 1)
        if cap.q is None:
            raise RuntimeError(f"scoring layer {scoring_layer} was not reached by the forward pass")
        logits = out.logits[0, :A].float()  # [A, V]
        l_lm = F.cross_entropy(logits, targets)
        scores = differentiable_document_scores(cap.q, cap.k, enc.block_offsets, cap.scaling,
                                                softcap=getattr(cap, "softcap", None))  # [N]
        positive = torch.tensor(enc.positive, dtype=torch.bool, device=scores.device)
        l_aux = info_nce(scores, positive, tau)
        loss = l_lm + float(lambda_aux) * l_aux
        if backward_scale is not None:
            (loss * float(backward_scale)).backward()
            loss, l_lm, l_aux = loss.detach(), l_lm.detach(), l_aux.detach()
    return {"loss": loss, "l_lm": l_lm, "l_aux": l_aux, "scores": scores.detach()}
