from deepspeed_ext.comm import *
from deepspeed_ext.comm import __all__  # noqa: F401
