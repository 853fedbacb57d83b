"""Pins the sortedcontainers internals the book's hot path relies on (see book.first_key)."""

import random

from sortedcontainers import SortedDict

from exchange.core.book import first_key


def test_first_key_matches_public_api_under_churn():
    rng = random.Random(7)
    sd = SortedDict()
    for step in range(20_000):
        k = rng.randint(-5000, 5000)
        if k in sd and rng.random() < 0.5:
            del sd[k]
        else:
            sd[k] = step
        if sd:
            assert first_key(sd) == sd.keys()[0] == sd.peekitem(0)[0]
