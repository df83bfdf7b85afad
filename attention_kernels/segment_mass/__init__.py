"""attnsift.attention_kernels.segment_mass: softmax attention mass of query rows per key segment."""
from attnsift.attention_kernels.segment_mass.api import SegmentMass, segment_mass

__all__ = ["SegmentMass", "segment_mass"]
