from . import layer

__all__ = ["layer"]
