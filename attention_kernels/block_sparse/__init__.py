"""attnsift.attention_kernels.block_sparse: BlockRank's block-sparse causal attention (prefill)."""
from attnsift.attention_kernels.block_sparse.api import block_sparse_attention, dense_mask

__all__ = ["block_sparse_attention", "dense_mask"]
