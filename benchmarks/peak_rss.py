"""This process's peak resident memory over a block of code, sampled every 20 ms (the driver-memory benchmarks)."""

from __future__ import annotations

import threading
import time


class PeakRSS:
    """``with PeakRSS() as rss: ...`` then ``rss.increment_mb``: the peak RSS over the block minus the RSS at
    its start."""

    def __init__(self, every_s: float = 0.02):
        import psutil

        self._proc, self._every = psutil.Process(), every_s
        self._stop = threading.Event()
        self.baseline = self.peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._every)

    def __enter__(self) -> PeakRSS:
        self.baseline = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def baseline_mb(self) -> float:
        return round(self.baseline / 2**20, 1)

    @property
    def increment_mb(self) -> float:
        return round((self.peak - self.baseline) / 2**20, 1)
