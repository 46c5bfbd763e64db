"""The training runtime: learning-rate schedules now; the engine, config and ZeRO follow."""
