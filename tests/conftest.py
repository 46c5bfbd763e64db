import pytest

from deepspeed_ext.ops.op_builder import SIMD_LEVELS
from deepspeed_ext.ops.op_builder.simd import supported_simd_level


@pytest.fixture(params=SIMD_LEVELS)
def simd_level(request, monkeypatch):
    """Runs a test once per SIMD level this CPU supports, forced through DS_SIMD."""
    level = request.param
    if SIMD_LEVELS.index(level) > SIMD_LEVELS.index(supported_simd_level()):
        pytest.skip(f"this CPU does not support {level}")
    monkeypatch.setenv("DS_SIMD", level)
    return level
