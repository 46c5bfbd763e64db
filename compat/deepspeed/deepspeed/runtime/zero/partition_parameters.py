# This module is deepspeed_ext's module of the same name (not a copy of its names), so that
# replacing zero_wrapper_for_fp_tensor_constructor here, as Transformers does, reaches zero.Init.
import sys

from deepspeed_ext.runtime.zero import partition_parameters

sys.modules[__name__] = partition_parameters
