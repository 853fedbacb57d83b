"""A dependency-free progress bar on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(
        self,
        total: int,
        label: str = "simulate",
        enabled: bool = True,
        stream=None,
        width: int = 30,
    ):
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, step: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + step)
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        frac = self.done / self.total
        fill = int(frac * self.width)
        el = now - self.t0
        eta = el / frac - el if frac > 0 else 0.0
        self.stream.write(
            f"\r{self.label} [{'#' * fill}{'.' * (self.width - fill)}] "
            f"{frac * 100:5.1f}% {el:6.1f}s eta {eta:5.1f}s {note}\033[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(0)
            self.stream.write("\n")
            self.stream.flush()
