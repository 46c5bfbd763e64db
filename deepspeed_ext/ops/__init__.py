"""Compiled ops. Each op's builder lives in deepspeed_ext.ops.op_builder; its Python face
(optimizers, modules, handles) in a subpackage named after it."""
