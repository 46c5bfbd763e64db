"""deepspeed_ext: DeepSpeed's API on JIT-compiled ops. Use it as `import deepspeed_ext as deepspeed`."""

from .comm import init_distributed
from .version import __version__

__all__ = ["__version__", "init_distributed"]
