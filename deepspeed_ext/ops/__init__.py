"""Compiled ops, one subpackage per op, named as the op's builder, csrc/ folder, test and
benchmark: async_io, cpu_adam, fused_adam, quantizer, sparse_attention, zero_gather. Each holds
the op's Python face (optimizers, modules, handles, fake impls); op_builder holds the builders.

adam, adagrad, lion and aio are DeepSpeed's module paths for objects of those ops; they only
re-export them.
"""
