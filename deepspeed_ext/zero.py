"""deepspeed_ext.zero: building and editing ZeRO-3 models (DeepSpeed's deepspeed.zero)."""

from .runtime.zero.init_context import (
                                        GatheredParameters,
                                        Init,
                                        register_external_parameter,
                                        unregister_external_parameter,
)
from .runtime.zero.partitioned_params import ZeroParamStatus

__all__ = ["GatheredParameters", "Init", "ZeroParamStatus", "register_external_parameter",
           "unregister_external_parameter"]
