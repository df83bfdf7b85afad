"""attnsift.attention_kernels: attention kernels for attention-based reranking.

Each op has a PyTorch reference (the specification, runs anywhere) and a Triton kernel; pick with
``impl=`` ("auto" = Triton on CUDA when available, else the reference). Importing this package does
not import torch or triton. Import the ops from their subpackages::

    from attnsift.attention_kernels.segment_mass import SegmentMass, segment_mass
    from attnsift.attention_kernels.block_sparse import block_sparse_attention, dense_mask
    from attnsift.attention_kernels.maxsim import maxsim

(They are deliberately not re-exported here: a function named like its subpackage would shadow the
subpackage attribute and break ``import attnsift.attention_kernels.maxsim.triton``.)
"""
