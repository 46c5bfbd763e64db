# __compatible_ops__ comes from deepspeed_ext.ops's module __getattr__ (probed on first access)
from deepspeed_ext.ops import __getattr__  # noqa: F401

from . import adagrad, adam, aio, lion, op_builder, quantizer, sparse_attention

__all__ = ["adagrad", "adam", "aio", "lion", "op_builder", "quantizer", "sparse_attention"]
