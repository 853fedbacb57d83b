"""The envelope (``seq``, ``ts``) travels beside a command, never on it:
``Exchange.apply(cmd, seq, ts)``, on the Python core and on the compiled one alike."""

from __future__ import annotations

import dataclasses

import pytest

from exchange.app.engine import build_exchange
from exchange.core.commands import (
    COMMAND_TYPES,
    AmendOrder,
    CancelOrder,
    Clock,
    Command,
    DepositCash,
    IssueUnits,
    PlaceOrder,
    RegisterFirm,
    SnapshotMarker,
)
from exchange.core.events import ExecutionReport
from exchange.core.exchange import SequenceError
from helpers import CEA, Market

T0 = 1_767_225_600_000_000_000


def _exchange(accelerate: bool):
    m = Market()  # the helper's market: segments and the CEA instrument
    if accelerate and not m.ex.accelerated:
        pytest.skip("exchange.core._accel is not built: no compiled path to check")
    if not accelerate:
        ex = build_exchange(accelerate=False)
        for cmd, seq, ts in m.seq.log:
            ex.apply(cmd, seq, ts)
        return ex
    return m.ex


PATHS = pytest.mark.parametrize("accelerate", [False, True], ids=["python", "compiled"])


def test_commands_carry_no_envelope():
    assert "seq" not in Command.__annotations__ and "ts" not in Command.__annotations__
    for name, cls in COMMAND_TYPES.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & {"seq", "ts"}, name
        assert cls._FIELDS == tuple(f.name for f in dataclasses.fields(cls)), name
        assert not hasattr(cls, "seq") and not hasattr(cls, "ts"), name
    for cmd in (
        PlaceOrder(account="A", instrument=CEA, side="buy", qty=1, price=8_500),
        CancelOrder(account="A", order_id=1),
        AmendOrder(account="A", order_id=1, qty=2),
        SnapshotMarker(),
        Clock(),
    ):
        assert not hasattr(cmd, "seq") and not hasattr(cmd, "ts")
        with pytest.raises(AttributeError):
            cmd.seq = 1  # slotted: there is nowhere to write an envelope


@PATHS
def test_one_command_object_applies_under_two_envelopes(accelerate):
    ex = _exchange(accelerate)
    last = ex.last_seq
    ex.apply(RegisterFirm(firm_id="A"), last + 1, T0 + 1)
    ex.apply(DepositCash(account="A", amount=10**9), last + 2, T0 + 2)
    ex.apply(RegisterFirm(firm_id="B"), last + 3, T0 + 3)
    ex.apply(IssueUnits(account="B", instrument=CEA, qty=100, ref="t"), last + 4, T0 + 4)
    buy = PlaceOrder(account="A", instrument=CEA, side="buy", qty=5, price=8_500)
    before = dataclasses.asdict(buy)
    first = ex.apply(buy, last + 5, T0 + 50)
    second = ex.apply(buy, last + 9, T0 + 90)  # the same object, a later envelope
    assert dataclasses.asdict(buy) == before  # nothing was written onto it
    assert not hasattr(buy, "seq") and not hasattr(buy, "ts")
    (er1,) = [e for e in first if isinstance(e, ExecutionReport)]
    (er2,) = [e for e in second if isinstance(e, ExecutionReport)]
    assert (er1.exec_type, er2.exec_type) == ("new", "new")
    assert er1.order_id != er2.order_id
    assert (er1.ts, er2.ts) == (T0 + 50, T0 + 90)  # each report has its envelope's time
    book = ex.books[(CEA, "main")]
    assert [book.orders[er.order_id].seq for er in (er1, er2)] == [last + 5, last + 9]
    assert (ex.last_seq, ex.now) == (last + 9, T0 + 90)
    # a cancel object too: one applied under two envelopes cancels each order in turn
    for oid, seq in ((er1.order_id, last + 10), (er2.order_id, last + 11)):
        cancel = CancelOrder(account="A", order_id=oid)
        (er,) = [e for e in ex.apply(cancel, seq, T0 + seq) if isinstance(e, ExecutionReport)]
        assert er.exec_type == "canceled" and er.ts == T0 + seq
    ex.check_invariants()


def test_the_same_envelopes_give_the_same_state_on_both_paths():
    """The compiled core reads the envelope from apply's arguments, as the reference does:
    one stream of shared command objects gives both the same events and hash."""
    ref, acc = _exchange(False), _exchange(True)
    stream = [RegisterFirm(firm_id="A"), DepositCash(account="A", amount=10**9)]
    stream += [RegisterFirm(firm_id="B"), IssueUnits(account="B", instrument=CEA, qty=100)]
    stream += [PlaceOrder(account="B", instrument=CEA, side="sell", qty=3, price=8_500)]
    stream += [PlaceOrder(account="A", instrument=CEA, side="buy", qty=5, price=8_500)]
    stream += [AmendOrder(account="A", order_id=2, price=8_499), Clock()]
    stream += [CancelOrder(account="A", order_id=2)]
    seq = ref.last_seq
    for i, cmd in enumerate(stream, 1):
        assert ref.apply(cmd, seq + i, T0 + 7 * i) == acc.apply(cmd, seq + i, T0 + 7 * i)
    assert ref.state_hash() == acc.state_hash()


@PATHS
def test_a_stale_seq_raises_and_changes_nothing(accelerate):
    ex = _exchange(accelerate)
    last, now, before = ex.last_seq, ex.now, ex.state_hash()
    for seq in (last, last - 1, 0, -5):
        for cmd in (
            PlaceOrder(account="nobody", instrument=CEA, side="buy", qty=1, price=8_500),
            CancelOrder(account="nobody", order_id=1),
            DepositCash(account="nobody", amount=1),
            Clock(),
        ):
            with pytest.raises(SequenceError, match=f"command seq {seq} after {last}"):
                ex.apply(cmd, seq, T0 + 10**12)
            assert (ex.last_seq, ex.now) == (last, now)
    assert ex.state_hash() == before
    ex.apply(Clock(), last + 1, T0 + 10**12)  # the next seq is taken
    assert (ex.last_seq, ex.now) == (last + 1, T0 + 10**12)


@PATHS
def test_apply_takes_the_envelope_as_three_positional_arguments(accelerate):
    ex = _exchange(accelerate)
    last = ex.last_seq
    with pytest.raises(TypeError):
        ex.apply(Clock())  # no envelope
    with pytest.raises(TypeError):
        ex.apply(Clock(), ex.last_seq + 1)  # half of one
    with pytest.raises(TypeError):
        ex.apply(Clock(), ex.last_seq + 1, T0, 0)
    assert ex.last_seq == last  # nothing was applied
