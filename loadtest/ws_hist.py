"""HdrHistogram helpers: latencies in microseconds, summaries in milliseconds."""

from __future__ import annotations

from array import array

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # 120 s
SIGFIG = 3


def new_hist() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIG)


def from_samples(samples: array) -> HdrHistogram:
    """Record ``samples`` (us) grouped by value: same histogram as one record per sample."""
    h = new_hist()
    if len(samples):
        a = (
            np.frombuffer(samples, dtype=np.int64)
            if samples.itemsize == 8
            else np.asarray(samples, dtype=np.int64)
        )
        a = np.clip(a, LOWEST_US, HIGHEST_US)
        vals, counts = np.unique(a, return_counts=True)
        for v, c in zip(vals.tolist(), counts.tolist()):
            h.record_value(v, c)
    return h


def merge(encoded: list[str]) -> HdrHistogram:
    h = new_hist()
    for e in encoded:
        if e:
            h.decode_and_add(e.encode("ascii"))
    return h


def summary_ms(h: HdrHistogram) -> dict:
    """``{p50, p90, p99, p999, max, mean, count}``; latencies in ms (None when empty)."""
    n = h.get_total_count()
    if not n:
        return {
            "p50": None,
            "p90": None,
            "p99": None,
            "p999": None,
            "max": None,
            "mean": None,
            "count": 0,
        }

    def ms(us):
        return round(us / 1000.0, 3)

    return {
        "p50": ms(h.get_value_at_percentile(50)),
        "p90": ms(h.get_value_at_percentile(90)),
        "p99": ms(h.get_value_at_percentile(99)),
        "p999": ms(h.get_value_at_percentile(99.9)),
        "max": ms(h.get_max_value()),
        "mean": ms(h.get_mean_value()),
        "count": n,
    }
