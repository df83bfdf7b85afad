"""Segment attention mass: how much of each query row's softmax attention falls on each segment.

Used by ICR (per-token mass of the query-span rows, softmax over all keys the row may see, through
:mod:`attnsift.attention_kernels.hf`) and BlockRank (re-softmax over the document keys only). Never builds an N x N matrix; the per-segment output
never needs rows x keys x heads memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attnsift.attention_kernels._common import check_offsets, check_same_device, resolve_impl

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

_SOFTMAX_OVER = ("all", "segments")


@dataclass(frozen=True)
class SegmentMass:
    """Result of :func:`segment_mass`.

    Attributes
    ----------
    lse : Tensor
        [R, Hq] float32, natural-log log-sum-exp of the scaled logits over the allowed keys
        (``-inf`` for a row that may see no key, e.g. a causal cut before every segment with
        ``softmax_over="segments"``).
    segment_mass : Tensor
        [R, Hq, S] float32, softmax mass per segment.
    token_mass : Tensor or None
        [R, Hq, N] float32 softmax mass per key when ``return_token_mass=True`` (0 for masked keys).
    """

    lse: "Tensor"
    segment_mass: "Tensor"
    token_mass: "Tensor | None"


def _row_keys(t: "Tensor | None", name: str, R: int, meaning: str, tensors: list) -> "Tensor | None":
    """Check a per-row key index tensor ([R] integers >= 0), note it for the device check, return it as int64."""
    import torch

    if t is None:
        return None
    if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"segment_mass: {name} must be an integer tensor [R] (int64) or None.")
    if tuple(t.shape) != (R,):
        raise ValueError(f"segment_mass: {name} must have shape [R]=({R},), got {tuple(t.shape)}.")
    if bool((t < 0).any()):
        raise ValueError(f"segment_mass: {name} must be >= 0 ({meaning}).")
    tensors.append((name, t))
    return t.to(torch.int64)


def segment_mass(q: "Tensor", k: "Tensor", segment_offsets: "Tensor", scale: float | None = None,
                 q_positions: "Tensor | None" = None, softmax_over: str = "all",
                 return_token_mass: bool = False, impl: str = "auto", key_start: "Tensor | None" = None,
                 softcap: float | None = None) -> SegmentMass:
    """Softmax attention mass of a few query rows on each segment of a long key sequence.

    Parameters
    ----------
    q : Tensor
        [R, Hq, D] queries of the rows (post-RoPE), any float dtype.
    k : Tensor
        [N, Hk, D] keys of the context (post-RoPE), ``Hq % Hk == 0`` (GQA: query head h reads key
        head ``h // (Hq // Hk)``).
    segment_offsets : Tensor
        [S+1] int64, strictly increasing; segment s is keys ``[off[s], off[s+1])``. Keys before
        ``off[0]`` or from ``off[S]`` on belong to no segment but still count in the softmax
        denominator when ``softmax_over="all"``.
    scale : float, optional
        Logit scale; default ``1 / sqrt(D)``.
    q_positions : Tensor, optional
        [R] int64 key index of each row for causal masking: row r sees keys ``j <= q_positions[r]``.
        None: every row sees all N keys.
    key_start : Tensor, optional
        [R] int64 first key index each row may see (sliding-window attention): row r sees keys
        ``j >= key_start[r]`` (and ``j <= q_positions[r]``). None: no lower bound.
    softcap : float, optional
        Logit soft-capping (Gemma 2): the scaled logits ``s`` become ``softcap * tanh(s / softcap)``.
    softmax_over : {"all", "segments"}
        ``"all"``: denominator over every allowed key (ICR). ``"segments"``: re-softmax over the keys
        inside segments only (BlockRank).
    return_token_mass : bool
        Also return the [R, Hq, N] per-key mass (O(R x Hq x N) memory).
    impl : {"auto", "reference", "triton"}
        ``auto`` = Triton on CUDA tensors when triton imports, else the PyTorch reference.

    Returns
    -------
    SegmentMass
        float32 tensors on q's device; accumulation is float32 whatever the input dtype.
    """
    import torch

    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"segment_mass: {name} must be a torch.Tensor, got {type(t).__name__}.")
        if not t.dtype.is_floating_point:
            raise TypeError(f"segment_mass: {name} must be a float tensor, got dtype {t.dtype}.")
    if q.dim() != 3:
        raise ValueError(f"segment_mass: q must be [R, Hq, D], got shape {tuple(q.shape)}.")
    if k.dim() != 3:
        raise ValueError(f"segment_mass: k must be [N, Hk, D], got shape {tuple(k.shape)}.")
    R, Hq, D = q.shape
    N, Hk, Dk = k.shape
    if Dk != D:
        raise ValueError(f"segment_mass: q and k head dims differ (q D={D}, k D={Dk}).")
    if R == 0 or N == 0 or D == 0 or Hk == 0:
        raise ValueError(f"segment_mass: empty input (q shape {tuple(q.shape)}, k shape {tuple(k.shape)}).")
    if Hq % Hk != 0:
        raise ValueError(f"segment_mass: the number of query heads ({Hq}) must be a multiple of the key heads ({Hk}).")
    if softmax_over not in _SOFTMAX_OVER:
        raise ValueError(f"segment_mass: softmax_over must be one of {_SOFTMAX_OVER}, got {softmax_over!r}.")
    off = check_offsets(segment_offsets, "segment_offsets", "segment", total=N)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"segment_mass: scale must be finite, got {scale}.")
    tensors = [("q", q), ("k", k)]
    q_positions = _row_keys(q_positions, "q_positions", R, "key index of each query row", tensors)
    key_start = _row_keys(key_start, "key_start", R, "first key index each query row sees", tensors)
    if softcap is not None:
        softcap = float(softcap)
        if not math.isfinite(softcap) or softcap <= 0:
            raise ValueError(f"segment_mass: softcap must be a positive finite number or None, got {softcap}.")
    check_same_device(tensors)
    which = resolve_impl(impl, q.device, "segment_mass")
    if which == "triton":
        from attnsift.attention_kernels.segment_mass.triton import segment_mass_triton

        lse, seg, tok = segment_mass_triton(q, k, off, scale, q_positions, softmax_over, bool(return_token_mass),
                                            key_start=key_start, softcap=softcap)
    else:
        from attnsift.attention_kernels.segment_mass.reference import segment_mass_reference

        lse, seg, tok = segment_mass_reference(q, k, off, scale, q_positions, softmax_over, bool(return_token_mass),
                                                  key_start=key_start, softcap=softcap)
    return SegmentMass(lse=lse, segment_mass=seg, token_mass=tok)
