"""Block-sparse causal prefill for BlockRank: prefix block, independent document blocks, final block."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from attnsift.attention_kernels._common import check_offsets, check_same_device, resolve_impl

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

_IMPLS = ("auto", "reference", "triton", "flex", "dense")


def block_sparse_attention(q: "Tensor", k: "Tensor", v: "Tensor", block_offsets: "Tensor",
                           scale: float | None = None, impl: str = "auto") -> "tuple[Tensor, Tensor]":
    """Causal attention under the BlockRank mask for one sequence.

    Mask (query row i in block bi, key j in block bj; always ``j <= i``): block 0 sees itself; a
    document block sees all of block 0 and itself; the last block sees everything.

    Parameters
    ----------
    q : Tensor
        [Hq, T, D] queries.
    k, v : Tensor
        [Hk, T, D] keys and values, ``Hq % Hk == 0`` (GQA).
    block_offsets : Tensor
        [B+1] int64 from 0 to T, strictly increasing: block 0 = prefix/instruction, blocks
        1..B-2 = documents, block B-1 = final block. With B == 1 the mask is plain causal.
    scale : float, optional
        Logit scale, default ``1 / sqrt(D)``.
    impl : {"auto", "reference", "triton", "flex", "dense"}
        ``auto`` = Triton on CUDA when triton imports, else the blockwise PyTorch reference.
        ``flex`` = torch FlexAttention with a BlockMask; ``dense`` = a quadratic float32 oracle.

    Returns
    -------
    out : Tensor
        [Hq, T, D] in q's dtype.
    lse : Tensor
        [Hq, T] float32 natural-log log-sum-exp of each row's scaled logits over its visible keys.
    """
    import torch

    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"block_sparse_attention: {name} must be a torch.Tensor, got {type(t).__name__}.")
        if not t.dtype.is_floating_point:
            raise TypeError(f"block_sparse_attention: {name} must be a float tensor, got dtype {t.dtype}.")
        if t.dim() != 3:
            raise ValueError(f"block_sparse_attention: {name} must be 3-D [heads, T, D], got shape {tuple(t.shape)}.")
    Hq, T, D = q.shape
    Hk = k.shape[0]
    if tuple(k.shape) != (Hk, T, D) or tuple(v.shape) != (Hk, T, D):
        raise ValueError(
            f"block_sparse_attention: k and v must both be [Hk, T={T}, D={D}], got k {tuple(k.shape)}, v {tuple(v.shape)}."
        )
    if T == 0 or D == 0 or Hk == 0 or Hq == 0:
        raise ValueError(f"block_sparse_attention: empty input (q shape {tuple(q.shape)}).")
    if Hq % Hk != 0:
        raise ValueError(f"block_sparse_attention: query heads ({Hq}) must be a multiple of key heads ({Hk}).")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"block_sparse_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}.")
    off = check_offsets(block_offsets, "block_offsets", "block", total=T, must_start_at_zero=True, must_cover=True)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"block_sparse_attention: scale must be finite, got {scale}.")
    check_same_device([("q", q), ("k", k), ("v", v)])
    which = resolve_impl(impl, q.device, "block_sparse_attention", allowed=_IMPLS)
    if which == "triton":
        from attnsift.attention_kernels.block_sparse.triton import block_sparse_triton

        return block_sparse_triton(q, k, v, off, scale)
    if which == "flex":
        from attnsift.attention_kernels.block_sparse.flex import block_sparse_flex, flex_available

        if not flex_available():
            raise ValueError(
                "block_sparse_attention: impl='flex' needs torch.nn.attention.flex_attention (torch >= 2.5); "
                f"this torch ({torch.__version__}) lacks it. Use impl='reference' or 'triton'."
            )
        return block_sparse_flex(q, k, v, off, scale)
    if which == "dense":
        from attnsift.attention_kernels.block_sparse.reference import dense_attention

        return dense_attention(q, k, v, off, scale)
    from attnsift.attention_kernels.block_sparse.reference import block_sparse_reference

    return block_sparse_reference(q, k, v, off, scale)


def dense_mask(block_offsets: "Tensor", T: int) -> "Tensor":
    """Dense bool [T, T] BlockRank mask (True = row may attend column), for tests and oracles.

    Parameters
    ----------
    block_offsets : Tensor
        [B+1] int64 from 0 to T.
    T : int
        Sequence length.
    """
    from attnsift.attention_kernels.block_sparse.reference import dense_mask as _dense_mask

    off = check_offsets(block_offsets, "block_offsets", "block", total=T, must_start_at_zero=True, must_cover=True)
    return _dense_mask(off, T)
