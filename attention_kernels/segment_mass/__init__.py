"""attnsift.attention_kernels.segment_mass"""
