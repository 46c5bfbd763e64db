"""The CPU SIMD level ops run at, as ds_report and the tests see it.

The kernels pick their level at run time in C++ (csrc/include/simd.h); this is the
same rule from Python: torch's own CPU capability, lowered by DS_SIMD if set.
"""

from __future__ import annotations

import functools
import os

SIMD_LEVELS = ("scalar", "avx2", "avx512")


@functools.cache
def supported_simd_level() -> str:
    """The best level this CPU runs, from torch.backends.cpu.get_cpu_capability()."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": "avx512", "AVX2": "avx2"}.get(capability, "scalar")


def cpu_simd_level() -> str:
    """The level CPU kernels use now: the supported one, or a lower one forced by DS_SIMD."""
    forced = os.environ.get("DS_SIMD", "")
    supported = supported_simd_level()
    if not forced:
        return supported
    if forced not in SIMD_LEVELS:
        raise ValueError(f"DS_SIMD={forced!r} is not a SIMD level; use one of {', '.join(SIMD_LEVELS)} (or unset it)")
    return min(forced, supported, key=SIMD_LEVELS.index)
