"""deepspeed_ext: DeepSpeed's API on JIT-compiled ops. Use it as `import deepspeed_ext as deepspeed`."""

from .version import __version__

__all__ = ["__version__"]
