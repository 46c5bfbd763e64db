"""Sequence parallelism: Ulysses attention (layer.py) splits the sequence across the ranks of a
sequence-parallel group and swaps to a split over heads around the attention itself."""

from .layer import DistributedAttention, single_all_to_all

__all__ = ["DistributedAttention", "single_all_to_all"]
