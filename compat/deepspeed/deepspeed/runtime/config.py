from deepspeed_ext.runtime.config import DeepSpeedConfig
from deepspeed_ext.runtime.config_schema import ConfigError as DeepSpeedConfigError

__all__ = ["DeepSpeedConfig", "DeepSpeedConfigError"]
