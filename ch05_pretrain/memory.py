"""How much memory a piece of work needs: the process's peak resident memory (RSS) during it.

PyTorch frees and reuses memory inside its own allocator, so the operating system's view,
sampled often from a background thread, is what a reader's machine actually has to provide.
Used by the benchmarks and by the distillation bonus (teacher pass against student training).
"""

from __future__ import annotations

import threading

import psutil


class PeakRSS:
    """Context manager that samples this process's resident memory every `interval` seconds.

    After the block: `start` (RSS on entry), `peak` (the highest RSS seen inside it) and
    `peak_increase` = peak - start, all in bytes: the extra memory the block needed
    (activations, gradients, temporary buffers, models loaded inside it).
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.proc = psutil.Process()
        self.start = self.peak = self.peak_increase = 0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.peak_increase = self.peak - self.start
