__version__ = "0.1.0"
# The DeepSpeed release whose API, config and files this version matches; the opt-in `deepspeed`
# distribution (compat/deepspeed) is versioned COMPAT_VERSION so version checks pass and the
# local label says it is this project.
DEEPSPEED_API_LEVEL = "0.19.8"
COMPAT_LABEL = "+dsext"  # how a `deepspeed` distribution's version says it is ours
COMPAT_VERSION = f"{DEEPSPEED_API_LEVEL}{COMPAT_LABEL}.{__version__}"
