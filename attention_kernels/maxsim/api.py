"""MaxSim (late interaction, ColBERT-style) scores of padded queries against packed documents."""
from __future__ import annotations

from typing import TYPE_CHECKING

from attnsift.attention_kernels._common import check_offsets, check_same_device, resolve_impl

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


def maxsim(queries: "Tensor", doc_tokens: "Tensor", doc_offsets: "Tensor",
           query_mask: "Tensor | None" = None, impl: str = "auto") -> "Tensor":
    """score[b, i] = sum over real query tokens q of max over document i's tokens d of q . d.

    Parameters
    ----------
    queries : Tensor
        [B, Lq, D] float query token vectors, padded to Lq.
    doc_tokens : Tensor
        [T, D] token vectors of all documents, packed.
    doc_offsets : Tensor
        [N+1] int64 increasing; document i is ``doc_tokens[off[i]:off[i+1]]`` (non-empty).
    query_mask : Tensor, optional
        [B, Lq] bool, True = real token; padded tokens contribute nothing. None: all real.
    impl : {"auto", "reference", "triton"}
        ``auto`` = Triton on CUDA tensors when triton imports, else the chunked PyTorch reference.

    Returns
    -------
    Tensor
        [B, N] float32 scores (a query with no real token scores 0).
    """
    import torch

    for name, t in (("queries", queries), ("doc_tokens", doc_tokens)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"maxsim: {name} must be a torch.Tensor, got {type(t).__name__}.")
        if not t.dtype.is_floating_point:
            raise TypeError(f"maxsim: {name} must be a float tensor, got dtype {t.dtype}.")
    if queries.dim() != 3:
        raise ValueError(f"maxsim: queries must be [B, Lq, D], got shape {tuple(queries.shape)}.")
    if doc_tokens.dim() != 2:
        raise ValueError(f"maxsim: doc_tokens must be [T, D], got shape {tuple(doc_tokens.shape)}.")
    B, Lq, D = queries.shape
    if doc_tokens.shape[1] != D:
        raise ValueError(f"maxsim: dims differ (queries D={D}, doc_tokens D={doc_tokens.shape[1]}).")
    if B == 0 or Lq == 0 or D == 0:
        raise ValueError(f"maxsim: empty queries tensor, shape {tuple(queries.shape)}.")
    off = check_offsets(doc_offsets, "doc_offsets", "document", total=doc_tokens.shape[0])
    tensors = [("queries", queries), ("doc_tokens", doc_tokens)]
    if query_mask is not None:
        if not isinstance(query_mask, torch.Tensor) or query_mask.dtype != torch.bool:
            raise TypeError("maxsim: query_mask must be a bool tensor [B, Lq] (True = real token) or None.")
        if tuple(query_mask.shape) != (B, Lq):
            raise ValueError(f"maxsim: query_mask must have shape [B, Lq]=({B}, {Lq}), got {tuple(query_mask.shape)}.")
        tensors.append(("query_mask", query_mask))
    check_same_device(tensors)
    which = resolve_impl(impl, queries.device, "maxsim")
    if which == "triton":
        from attnsift.attention_kernels.maxsim.triton import maxsim_triton

        return maxsim_triton(queries, doc_tokens, off, query_mask)
    from attnsift.attention_kernels.maxsim.reference import maxsim_reference

    return maxsim_reference(queries, doc_tokens, off, query_mask)
