"""Serial numbers of credit units, and the range arithmetic the registry keeps them with.

A *block* is one issuance: ``issuer``, ``project`` (a project id, or a carbon-inclusive batch
id), ``vintage`` and a range of unit numbers ``first..last`` (inclusive, as serials are read by
people). A serial names a unit or a range of units of one block::

    ISSUER/PROJECT/VINTAGE/FIRST-LAST      e.g.  CCER/P-0042/2025/1-500
    ISSUER/PROJECT/VINTAGE/UNIT            e.g.  CCER/P-0042/2025/17

Identifiers may not contain ``/`` (so a serial splits one way). Units are integers >= 1.

Holdings of serials are kept as *pieces* ``[block_no, lo, hi]`` (inclusive) in a list sorted
by ``(block_no, lo)``: block numbers are given in issuance order, so the front of the list is
the oldest serial — "oldest first" is taking from the front. Adjacent pieces of the same block
are merged, so a list is as short as the holder's serials are fragmented.
"""

from __future__ import annotations

import bisect

SEP = "/"


def fmt(issuer: str, project: str, vintage: int, first: int, last: int) -> str:
    tail = str(first) if first == last else f"{first}-{last}"
    return f"{issuer}{SEP}{project}{SEP}{vintage}{SEP}{tail}"


def parse(text) -> tuple[str, str, int, int, int]:
    """``"CCER/P-0042/2025/1-500"`` -> ``("CCER", "P-0042", 2025, 1, 500)``; ValueError when it
    is not a serial."""
    if not isinstance(text, str) or len(text) > 300:
        raise ValueError("a serial is a string ISSUER/PROJECT/VINTAGE/FIRST[-LAST]")
    parts = text.split(SEP)
    if len(parts) != 4 or not parts[0] or not parts[1]:
        raise ValueError(f"{text!r} is not a serial ISSUER/PROJECT/VINTAGE/FIRST[-LAST]")
    issuer, project, vintage, units = parts
    lo, _, hi = units.partition("-")
    for s in (vintage, lo, hi or lo):
        if not (s.isascii() and s.isdigit()) or len(s) > 16:
            raise ValueError(f"{text!r}: vintage and units are whole numbers")
    first, last = int(lo), int(hi or lo)
    if first < 1 or last < first:
        raise ValueError(f"{text!r}: units run from 1 up, FIRST <= LAST")
    return issuer, project, int(vintage), first, last


def key(issuer: str, project: str, vintage: int) -> str:
    return f"{issuer}{SEP}{project}{SEP}{vintage}"


def overlapping(ranges: list, first: int, last: int) -> list:
    """The entries ``[first, last, block_no]`` of a list sorted by ``first`` (non-overlapping)
    that share a unit with ``first..last``."""
    k = bisect.bisect_right(ranges, [last, float("inf")])
    out = []
    while k > 0:
        k -= 1
        r = ranges[k]
        if r[1] < first:
            break
        out.append(r)
    return out[::-1]


def covered(ranges: list, first: int, last: int) -> bool:
    """Is every unit of ``first..last`` inside the union of ``ranges`` (``[first, last, ...]``
    entries sorted by ``first``; they may touch or overlap)?"""
    at = first
    for r in ranges:
        if r[0] > at:
            break
        if r[1] >= at:
            at = r[1] + 1
            if at > last:
                return True
    return at > last


def size(pieces: list) -> int:
    return sum(p[2] - p[1] + 1 for p in pieces)


def add(pieces: list, new: list) -> None:
    """Put ``new`` pieces into the sorted list ``pieces``, merging neighbours of one block."""
    for b, lo, hi in new:
        k = bisect.bisect_left(pieces, [b, lo, hi])
        if k > 0 and pieces[k - 1][0] == b and pieces[k - 1][2] + 1 == lo:
            pieces[k - 1][2] = hi
            k -= 1
        else:
            pieces.insert(k, [b, lo, hi])
        if k + 1 < len(pieces) and pieces[k + 1][0] == b and pieces[k][2] + 1 == pieces[k + 1][1]:
            pieces[k][2] = pieces[k + 1][2]
            del pieces[k + 1]


def take_oldest(pieces: list, qty: int, only=None) -> list:
    """Remove ``qty`` units from the front of ``pieces`` (the oldest serials), or from the
    pieces whose block satisfies ``only(block_no)``; return what was taken. The caller checked
    there is enough."""
    taken = []
    k = 0
    while qty and k < len(pieces):
        b, lo, hi = pieces[k]
        if only is not None and not only(b):
            k += 1
            continue
        n = hi - lo + 1
        if n <= qty:
            taken.append([b, lo, hi])
            del pieces[k]
            qty -= n
        else:
            taken.append([b, lo, lo + qty - 1])
            pieces[k][1] = lo + qty
            qty = 0
    if qty:
        raise AssertionError(f"{qty} units short of serials")
    return taken


def find(pieces: list, b: int, lo: int, hi: int) -> int:
    """Index of the piece holding all of block ``b``'s units ``lo..hi``, or -1."""
    k = bisect.bisect_right(pieces, [b, lo, float("inf")]) - 1
    if k >= 0 and pieces[k][0] == b and pieces[k][1] <= lo and hi <= pieces[k][2]:
        return k
    return -1


def take_exact(pieces: list, b: int, lo: int, hi: int) -> None:
    """Remove block ``b``'s units ``lo..hi`` (checked present with :func:`find`)."""
    k = find(pieces, b, lo, hi)
    if k < 0:
        raise AssertionError("serials not held")
    _, plo, phi = pieces[k]
    rest = []
    if plo < lo:
        rest.append([b, plo, lo - 1])
    if hi < phi:
        rest.append([b, hi + 1, phi])
    pieces[k : k + 1] = rest
