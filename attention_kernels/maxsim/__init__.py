"""attnsift.attention_kernels.maxsim: late-interaction MaxSim over packed documents."""
from attnsift.attention_kernels.maxsim.api import maxsim

__all__ = ["maxsim"]
