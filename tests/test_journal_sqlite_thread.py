"""The SQLite journal's thread writer (``writer="thread"``): an append that fails or is
cancelled while its COMMIT is on the worker thread ends its transaction and raises what
happened, not an error of its own clean-up."""

from __future__ import annotations

import asyncio

import pytest

from exchange.core.commands import PlaceOrder, encode_command
from exchange.journal.sqlite import SQLiteJournal


def _records(first: int, n: int) -> list[tuple[int, int, dict]]:
    return [
        (
            s,
            1_000 + s,
            encode_command(
                PlaceOrder(account="A", instrument="CEA-2026", side="buy", qty=1, price=100 + s)
            ),
        )
        for s in range(first, first + n)
    ]


async def test_cancelled_append_raises_cancelled_and_leaves_no_transaction(tmp_path):
    j = SQLiteJournal(str(tmp_path / "j.sqlite"), writer="thread")
    await j.open()
    try:
        await j.append(_records(1, 3))
        task = asyncio.create_task(j.append(_records(4, 2)))
        # the append chains and INSERTs on this thread, then waits for its COMMIT on the
        # worker thread: the first point where it yields
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the clean-up ran on the worker thread: no transaction left open on the connection
        assert not j._db.in_transaction
        rows = [r async for r in j.read(1, 3)]
        assert [s for s, _ts, _d in rows] == [1, 2, 3]
    finally:
        await j.close()
