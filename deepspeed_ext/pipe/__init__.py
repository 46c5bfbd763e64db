"""Pipeline parallelism (DeepSpeed's deepspeed.pipe): PipelineModule and its layer specs,
process topologies, schedules, and the engine deepspeed_ext.initialize returns for them."""

from .checkpoint import plain_state_dict
from .engine import PipelineEngine, PipelineError
from .module import LayerSpec, PipelineModule, TiedLayerSpec
from .schedule import InferenceSchedule, PipeSchedule, TrainSchedule, ZeroBubbleSchedule
from .topology import PipeDataParallelTopology, PipelineParallelGrid, PipeModelDataParallelTopology, ProcessTopology

__all__ = ["InferenceSchedule", "LayerSpec", "PipeDataParallelTopology", "PipeModelDataParallelTopology", "PipeSchedule",
           "PipelineEngine", "PipelineError", "PipelineModule", "PipelineParallelGrid", "ProcessTopology",
           "TiedLayerSpec", "TrainSchedule", "ZeroBubbleSchedule", "plain_state_dict"]
