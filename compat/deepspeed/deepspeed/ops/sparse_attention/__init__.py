from deepspeed_ext.ops.sparse_attention import *
from deepspeed_ext.ops.sparse_attention import __all__  # noqa: F401
