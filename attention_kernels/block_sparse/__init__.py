"""attnsift.attention_kernels.block_sparse"""
