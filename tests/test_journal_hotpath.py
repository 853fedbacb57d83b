"""The runner's submit path in C (exchange/journal/_accel.c) against its pure-Python
reference: the record encoder (codec.payload_line) byte for byte, and the Submitter
(runner._PySubmitter) step for step - same journal, same events, same errors."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from exchange.core.commands import (
    COMMAND_TYPES,
    CancelOrder,
    PlaceOrder,
    RegisterSupplyChain,
    SnapshotMarker,
)
from exchange.core.exchange import SequenceError
from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, RunnerFailed, open_journal
from exchange.journal import codec, runner as runner_mod
from exchange.journal.codec import LINE_ENCODERS, payload_line
from loadtest.streams import core_commands, generate, market_setup_commands

HAVE_C = codec.C_ENCODER and runner_mod.C_SUBMITTER
if not HAVE_C and os.environ.get("REQUIRE_SERVICES") == "1":
    # The extension is built by `pip install -e .` wherever a C compiler is (dev.py test does
    # that); CI requires it, like it requires its services.
    raise RuntimeError(
        "exchange.journal._accel is not built (REQUIRE_SERVICES=1): "
        "reinstall with a C compiler: pip install -e ."
    )
needs_c = pytest.mark.skipif(
    not HAVE_C, reason="exchange.journal._accel is not built (no C compiler at install time)"
)
if HAVE_C:
    from exchange.journal._accel import append_line as c_append_line, rows_json


def reference_line(cmd) -> bytes:
    return LINE_ENCODERS[cmd.__class__](cmd)


def c_line(cmd) -> bytes | None:
    """What the C encoder appends for cmd, or None when it leaves cmd to the reference one
    (then it must leave the buffer exactly as it was)."""
    LINE_ENCODERS[cmd.__class__]  # registers the class with the C encoder, as a first use does
    buf = bytearray(b"before")
    if c_append_line(buf, cmd):
        assert buf[:6] == b"before"
        return bytes(buf[6:])
    assert buf == b"before"
    return None


# ------------------------------------------------------------------- the encoder


@needs_c
def test_c_encoder_writes_orjsons_bytes_for_the_order_flow():
    st_ = generate(2000, 3)
    cmds = market_setup_commands(st_) + [c for c, _seq, _ts in core_commands(st_)]
    taken = 0
    for c in cmds:
        got = c_line(c)
        if got is not None:
            assert got == reference_line(c)
            taken += 1
    # every order command is plain values: the C path takes all of them
    assert taken >= sum(1 for c in cmds if isinstance(c, (PlaceOrder, CancelOrder)))


@needs_c
def test_c_encoder_leaves_what_it_does_not_write_plainly_to_orjson():
    odd = [
        PlaceOrder(account="A\nB", instrument="CEA-2026", side="buy", qty=1, price=1),
        PlaceOrder(account='say "hi"', instrument="CEA-2026", side="buy", qty=1, price=1),
        PlaceOrder(account="back\\slash", instrument="CEA-2026", side="buy", qty=1, price=1),
        PlaceOrder(account="caf\u00e9", instrument="CEA-2026", side="buy", qty=1, price=1),
        PlaceOrder(account="del\x7f", instrument="CEA-2026", side="buy", qty=1, price=1),
        PlaceOrder(account="A", instrument="CEA-2026", side="buy", qty=2**63, price=1),
        PlaceOrder(account="A", instrument="CEA-2026", side="buy", qty=1.5, price=1),
        RegisterSupplyChain(
            chain_id="c1", members=(("A", 0), ("B", 1)), edges=(("B", "A", 1_000_000),)
        ),
    ]
    for c in odd:
        assert c_line(c) is None, c
    # ... and where orjson refuses a value, the submit path raises what it always raised
    big = PlaceOrder(account="A", instrument="CEA-2026", side="buy", qty=2**64, price=1)
    assert c_line(big) is None
    with pytest.raises(TypeError):
        reference_line(big)


@needs_c
def test_c_encoder_edge_values():
    for qty in (0, 1, -1, 9, 10, 2**63 - 1, -(2**63), 123456789012345678):
        c = PlaceOrder(
            account="A",
            instrument="CEA-2026",
            side="sell",
            qty=qty,
            price=None,
            post_only=True,
            client_order_id="",
        )
        assert (
            c_line(c)
            == reference_line(c)
            == orjson.dumps(
                [
                    "place_order",
                    "A",
                    "CEA-2026",
                    "main",
                    "sell",
                    qty,
                    None,
                    "limit",
                    "GTC",
                    True,
                    "",
                ]
            )
            + b"\n"
        )
    m = SnapshotMarker()
    assert c_line(m) == reference_line(m)


@needs_c
def test_c_encoder_refuses_an_unset_field_and_a_subclass():
    bare = object.__new__(PlaceOrder)  # no field set: the reference encoder raises
    payload_line(PlaceOrder(account="A", instrument="I", side="buy", qty=1))
    buf = bytearray()
    assert c_append_line(buf, bare) is False and buf == b""
    with pytest.raises(AttributeError):
        reference_line(bare)

    class Sub:  # a class never registered
        pass

    assert c_append_line(buf, Sub()) is False and buf == b""
    with pytest.raises(TypeError):
        c_append_line(
            b"not a bytearray", PlaceOrder(account="A", instrument="I", side="buy", qty=1)
        )


_text = st.text(max_size=12)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    _text,
    st.floats(allow_nan=False, allow_infinity=False),
)


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(COMMAND_TYPES)), st.data())
def test_c_encoder_matches_orjson_on_any_values(name, data):
    cls = COMMAND_TYPES[name]
    cmd = object.__new__(cls)
    for f in cls._FIELDS:
        setattr(cmd, f, data.draw(_scalar, label=f))
    try:
        want = reference_line(cmd)
    except TypeError:  # orjson refuses it (an int over 64 bits): C must not write it either
        want = None
    got = c_line(cmd)
    if got is not None:
        assert got == want


# ------------------------------------------------------------------- the submitter


def _clock():
    t = [1_767_225_600_000_000_000]

    def clock():
        t[0] += 7  # a clock that repeats itself would be corrected to last + 1
        return t[0] - (t[0] % 3 == 0) * 10

    return clock


async def _run(path: str, cmds: list, c: bool) -> tuple[list, list, str]:
    r = CoreRunner(
        build_exchange(),
        open_journal(path),
        snapshot_every_commands=250,
        clock=_clock(),
        c_submitter=c,
    )
    seen: list = []
    r.add_listener(lambda cmd, seq, ts, events: seen.append((seq, ts, len(events))))
    await r.start()
    results = []
    for i, cmd in enumerate(cmds):
        events, fut = r.submit_nowait(cmd)
        results.append(events)
        if i % 37 == 0:
            await asyncio.sleep(0)
    await fut
    await r.stop()
    assert r.batches > 1
    return results, seen, r.exchange.state_hash()


def _rows(path: str) -> list:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT seq, ts, payload, hash FROM journal ORDER BY seq").fetchall()
    finally:
        con.close()


@needs_c
def test_c_and_python_submitters_write_the_same_journal(tmp_path):
    st_ = generate(1500, 11)
    out = {}
    for c in (True, False):
        # fresh objects each run; the runner gives the envelopes
        cmds = market_setup_commands(st_) + [c for c, _seq, _ts in core_commands(st_)]
        path = str(tmp_path / f"j-{c}.sqlite")
        results, seen, h = asyncio.run(_run(path, cmds, c))
        out[c] = (results, seen, h, _rows(path))
    assert type(CoreRunner(build_exchange(), None).submit_nowait.__self__).__name__ == "Submitter"
    assert out[True][0] == out[False][0]  # the same events, command by command
    assert out[True][1] == out[False][1]  # the listeners saw the same seq, ts, events
    assert out[True][2] == out[False][2]  # state hash
    assert out[True][3] == out[False][3]  # the journal, byte for byte (payload, ts, chain)
    assert any(r[2].startswith(b'["snapshot_marker"') for r in out[True][3])


@pytest.mark.parametrize("c", [pytest.param(True, marks=needs_c), False], ids=["c", "python"])
def test_submitter_journals_a_core_error_and_reraises_a_sequence_error(tmp_path, caplog, c):
    async def go():
        r = CoreRunner(
            build_exchange(),
            open_journal(str(tmp_path / "j.sqlite")),
            clock=_clock(),
            c_submitter=c,
        )
        with pytest.raises(RunnerFailed):
            r.submit_nowait(SnapshotMarker())  # not started: refused
        await r.start()
        apply = r.exchange.apply
        calls = []

        def flaky(cmd, seq, ts):
            calls.append(seq)
            if len(calls) == 1:
                r.exchange.last_seq = seq  # the core moved on, then a handler failed
                raise ValueError("a core bug")
            if len(calls) == 2:
                raise SequenceError("out of order")
            return apply(cmd, seq, ts)

        r._sub.apply = flaky
        with caplog.at_level(logging.ERROR, logger="exchange.journal.runner"):
            events, fut = r.submit_nowait(SnapshotMarker())
        assert isinstance(events, ValueError) and "core raised on seq 1" in caplog.text
        await fut  # journaled anyway: replay reproduces it
        with pytest.raises(SequenceError):
            r.submit_nowait(SnapshotMarker())
        r._sub.apply = apply
        events, fut = r.submit_nowait(SnapshotMarker())
        await fut
        assert calls == [1, 2] and r.durable_seq == 2  # the refused seq 2 was not journaled
        # a command the journal cannot encode is refused before the core sees it
        before = r.exchange.state_hash()
        big = PlaceOrder(account="POWER1", instrument="CEA-2026", side="buy", qty=2**64, price=1)
        with pytest.raises(TypeError):
            r.submit_nowait(big)
        assert r.exchange.last_seq == 2 and r.exchange.state_hash() == before
        events, fut = r.submit_nowait(SnapshotMarker())
        await fut
        assert r.durable_seq == 3
        await r.stop(snapshot=False)
        con = sqlite3.connect(str(tmp_path / "j.sqlite"))
        rows = con.execute("SELECT seq, payload FROM journal ORDER BY seq").fetchall()
        con.close()
        assert [q for q, _ in rows] == [1, 2, 3]  # payloads and stamps stayed in step
        # (a marker's seal fields are appended with defaults: of_seq 0, no state hash)
        assert all(p == b'["snapshot_marker",0,null]' for _, p in rows)
        with pytest.raises(RunnerFailed):
            r.submit_nowait(SnapshotMarker())

    asyncio.run(go())


def test_submitter_reads_time_ns_itself_and_keeps_the_stamps_increasing(tmp_path):
    import time

    async def go():
        r = CoreRunner(
            build_exchange(), open_journal(str(tmp_path / "j.sqlite")), clock=time.time_ns
        )
        await r.start()
        before = time.time_ns()
        stamps = []
        for _ in range(500):
            _events, fut = r.submit_nowait(SnapshotMarker())
            stamps.append(r.exchange.now)  # its ts: the runner has just applied it
        after = time.time_ns()
        await fut
        await r.stop(snapshot=False)
        assert before <= stamps[0] and stamps[-1] <= after + 500
        assert all(b > a for a, b in zip(stamps, stamps[1:]))  # strictly increasing

    asyncio.run(go())


# ------------------------------------------------------------------- the snapshot's orders


def _market(n: int = 3000, seed: int = 5):
    ex = build_exchange()
    st_ = generate(n, seed)
    cmds = market_setup_commands(st_) + [c for c, _seq, _ts in core_commands(st_)]
    for i, c in enumerate(cmds, 1):
        ex.apply(c, i, i)
    return ex


@needs_c
def test_snapshot_orders_in_c_are_the_python_bytes(monkeypatch):
    ex = _market()
    assert sum(len(b.orders) for b in ex.books.values()) > 100
    fast = runner_mod.snapshot_bytes(ex)
    monkeypatch.setattr(runner_mod, "_rows_json", None)
    slow = runner_mod.snapshot_bytes(ex)
    assert fast == slow
    assert orjson.loads(fast) == orjson.loads(orjson.dumps(ex.to_state()))
    # Order.STATE_FIELDS names to_state's values in order
    o = next(iter(next(b for b in ex.books.values() if b.orders).orders.values()))
    assert [getattr(o, f) for f in o.STATE_FIELDS] == o.to_state()


@needs_c
def test_snapshot_orders_fall_back_to_python_for_a_value_c_does_not_write():
    from exchange.core.book import Order

    ex = _market()
    book = next(b for b in ex.books.values() if b.orders)
    o = next(iter(book.orders.values()))
    o.client_order_id = 'caf\u00e9 "1"'  # written by orjson, not by C
    got = runner_mod._orders_json(book)
    assert isinstance(got, list) and got[0] == next(book.iter_orders()).to_state()
    assert orjson.loads(runner_mod.snapshot_bytes(ex)) == orjson.loads(orjson.dumps(ex.to_state()))
    assert rows_json([[o]], Order, ("order_id", "no_such_slot")) is None
    assert rows_json([], Order, Order.STATE_FIELDS) == b"[]"
    assert rows_json([[], [o]], Order, ("order_id", "seq")) == orjson.dumps([[o.order_id, o.seq]])
    assert rows_json([[o, o]], Order, ()) == b"[[],[]]"
    assert rows_json([[o, "not an order"]], Order, ("order_id",)) is None
