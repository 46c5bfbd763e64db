"""Timing a block of work on the device's clock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from ..accelerator import get_accelerator


@contextlib.contextmanager
def device_timer(enabled: bool, done: Callable[[float], None]):
    """Pass done() the block's wall seconds, the device synchronized before and after so its
    queued work counts; does nothing when not enabled."""
    if not enabled:
        yield
        return
    get_accelerator().synchronize()
    started = time.perf_counter()
    yield
    get_accelerator().synchronize()
    done(time.perf_counter() - started)
