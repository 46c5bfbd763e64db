"""The training runtime: the engine and the parts it conducts (config, precision, optimizers,
gradients, LR schedules, checkpoints, ZeRO)."""
