from deepspeed_ext.pipe import LayerSpec, PipelineModule, ProcessTopology, TiedLayerSpec

from . import engine, module, schedule, topology

__all__ = ["LayerSpec", "PipelineModule", "ProcessTopology", "TiedLayerSpec", "engine", "module", "schedule",
           "topology"]
