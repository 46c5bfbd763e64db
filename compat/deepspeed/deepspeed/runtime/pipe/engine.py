from deepspeed_ext.pipe.engine import PipelineEngine

__all__ = ["PipelineEngine"]
