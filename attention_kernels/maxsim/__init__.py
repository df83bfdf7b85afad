"""attnsift.attention_kernels.maxsim"""
