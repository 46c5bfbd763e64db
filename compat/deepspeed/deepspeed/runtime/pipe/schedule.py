from deepspeed_ext.pipe.schedule import (
    BackwardPass,
    BufferOpInstruction,
    ForwardPass,
    InferenceSchedule,
    LoadMicroBatch,
    OptimizerStep,
    PipeInstruction,
    PipeSchedule,
    RecvActivation,
    RecvGrad,
    ReduceGrads,
    ReduceTiedGrads,
    SendActivation,
    SendGrad,
    TrainSchedule,
)

__all__ = ["BackwardPass", "BufferOpInstruction", "ForwardPass", "InferenceSchedule", "LoadMicroBatch", "OptimizerStep",
           "PipeInstruction", "PipeSchedule", "RecvActivation", "RecvGrad", "ReduceGrads", "ReduceTiedGrads",
           "SendActivation", "SendGrad", "TrainSchedule"]
