from deepspeed_ext.utils import *
from deepspeed_ext.utils import __all__  # noqa: F401

from . import groups, zero_to_fp32  # noqa: F401 (DeepSpeed's paths for these two, over deepspeed_ext's modules)
