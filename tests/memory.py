"""Measuring what a process really holds: its anonymous resident memory (heap and anonymous
mappings, so every tensor, hidden copy and pool shows), sampled while code runs."""

from __future__ import annotations

import threading
import time

# For the processes that measure: glibc otherwise raises its mmap threshold after the first
# large free and keeps later freed blocks in its heap, so RSS would count memory no tensor
# holds any more.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def anonymous_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon"))


class PeakAnonymousMemory:
    """`with PeakAnonymousMemory() as peak: ...` leaves peak.bytes, the largest anonymous RSS
    seen inside the block. Torch ops release the
    GIL, so the sampling thread runs while they do."""

    def __enter__(self):
        self.bytes = anonymous_bytes()
        self._running = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.bytes = max(self.bytes, anonymous_bytes())
            time.sleep(0.0005)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._sampler.join()
        self.bytes = max(self.bytes, anonymous_bytes())
