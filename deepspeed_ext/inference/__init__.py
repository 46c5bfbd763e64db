"""Inference: init_inference and int8 weight quantization of nn.Linear layers."""

from .engine import InferenceEngine, init_inference, model_bytes
from .quantized_linear import QuantizedLinear

__all__ = ["InferenceEngine", "QuantizedLinear", "init_inference", "model_bytes"]
