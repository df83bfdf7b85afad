"""attnsift.attention_kernels"""
