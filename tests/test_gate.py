"""The gateway's order requests in C (exchange/server/_accel.c, ``gateway._gate``) against the
Python path they stand in for (Session.on_request and what it calls).

The same request frames go through two gateways, each over its own copy of the same market:
one with the C gate, one with ``_gate`` switched off. Everything observable must be the same:
every byte written to every connection (replies, error replies, execution pushes, batched
arrays), the metrics, the idempotency memory, the sessions' rate-limit tokens and
cancel-on-disconnect sets, and the exchange's state hash. The frames are drawn by hypothesis
from well-formed and malformed requests alike (every parameter's odd values, extra and missing
keys, reused client order ids, unknown orders, batches, an unauthenticated session, admission
control refusing orders), so both what C takes and what it hands back to Python are covered.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import types

import pytest
from hypothesis import given, strategies as st

import exchange.server.gateway as gateway_mod
import exchange.server.memory as memory_mod
from exchange.app.bench import _mix_frames, _mix_market, _settings
from exchange.server.gateway import Gateway, Session
from exchange.server.memory import MemoryRunner
from helpers import streams_settings

HAVE_GATE = (
    gateway_mod._gate is not gateway_mod._gate_off
    and gateway_mod._fanout is not None
    and gateway_mod._replies is not None
)
needs_gate = pytest.mark.skipif(not HAVE_GATE, reason="exchange.server._accel is not built")


class _Sink:
    closed = False
    compress = False

    async def send_frame(self, data, opcode) -> None:
        raise AssertionError("the sessions write to their transport")


class _Recorder:
    """A socket transport that keeps what is written."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def write(self, data) -> None:
        self.chunks.append(bytes(data))


# sessions: 0 and 1 one firm (1 with cancel-on-disconnect and batched replies), 2 another
# firm, 3 never authenticated
N_SESSIONS = 4


async def _run(
    frames: list[list[tuple[int, bytes]]],
    use_gate: bool,
    max_in_flight: int,
    fail_submit_at: int | None = None,
    slow_journal: bool = False,
    use_fanout: bool | None = None,
    rich_subs: bool = False,
    window: int | None = None,
    fail_batch_at: int | None = None,
) -> dict:
    """The frames through a gateway: with the C gate or not, with the C fan-out and durable
    replies or not (default: as the gate). ``rich_subs``: session 1 subscribes to its firm's
    balances, the
    book, trades and the ticker, and session 3 is authenticated as the second firm with an
    executions subscription of its own (that firm has two subscribers): the cases the
    fan-out hands to Python, and the balances it marks itself. ``window``: the idempotency
    memory's size; ``fail_batch_at``: the n-th batch's durable future fails."""
    clock = itertools.count(1_800_000_000_000_000_000)
    seconds = itertools.count()
    memory_mod_time = memory_mod.time
    # deterministic stamps; the journal lag in time is 0, or with slow_journal a second more
    # at every look (so an order finding commands in flight is refused)
    memory_mod.time = types.SimpleNamespace(
        time_ns=lambda: next(clock),
        monotonic=(lambda: float(next(seconds))) if slow_journal else (lambda: 0.0),
    )
    gate_before = gateway_mod._gate
    fanout_before, replies_before = gateway_mod._fanout, gateway_mod._replies
    idem_before = gateway_mod._idem_listen
    gateway_mod._gate = gate_before if use_gate else gateway_mod._gate_off
    if not (use_gate if use_fanout is None else use_fanout):
        gateway_mod._fanout = gateway_mod._replies = gateway_mod._idem_listen = None
    try:
        cfg = _settings()
        ex, keys = _mix_market(cfg)
        gw = Gateway(ex, MemoryRunner(ex), cfg.server)
        gw._max_in_flight = max_in_flight
        if rich_subs:  # book updates pushed at once, not on a wall-clock timer
            gw._book_interval = 0.0
        if window is not None:
            gw.idem.window = window
        if fail_batch_at is not None:
            runner, real_commit, batches = gw.runner, gw.runner._commit, itertools.count()

            def commit():
                if next(batches) == fail_batch_at and runner._future is not None:
                    runner._future.set_exception(RuntimeError("journal write failed"))
                    runner._future.exception()  # retrieved
                real_commit()

            runner._commit = commit
        if fail_submit_at is not None:  # the runner refuses from the n-th submit on
            real = gw.runner.submit_nowait
            calls = itertools.count()

            def submit_nowait(cmd):
                if next(calls) >= fail_submit_at:
                    raise RuntimeError("journal write failed: disk full")
                return real(cmd)

            gw.runner.submit_nowait = submit_nowait
        sessions = []
        for i in range(N_SESSIONS):
            s = Session(gw, _Sink())
            gw.attach(s)
            s.transport = _Recorder()
            if i < 3 or rich_subs:
                gw.authenticate(s, keys[0 if i < 2 else 1], cod=(i == 1), batch=(i == 1))
                if i != 1:
                    gw.subscribe(s, "executions")
                elif rich_subs:
                    for ch in (
                        "balances",
                        "book:CEA-2026:main",
                        "trades:CEA-2026",
                        "ticker:CEA-2026",
                    ):
                        gw.subscribe(s, ch)
            sessions.append(s)
        for tick in frames:
            for i, data in tick:
                sessions[i].on_text(data)
            for _ in range(4):  # commit, replies, flush hops
                await asyncio.sleep(0)
        m = gw.metrics
        return {
            "written": [s.transport.chunks for s in sessions],
            "metrics": {k: v for k, v in vars(m).items()},
            "idem_done": dict(gw.idem.done),
            "idem_inflight": sorted(gw.idem.inflight),
            "tokens": [s.tokens for s in sessions],
            "placed": [sorted(s.placed) for s in sessions],
            "failed": getattr(gw, "failed", None),
            "state_hash": ex.state_hash(),
        }
    finally:
        memory_mod.time = memory_mod_time
        gateway_mod._gate = gate_before
        gateway_mod._fanout, gateway_mod._replies = fanout_before, replies_before
        gateway_mod._idem_listen = idem_before


def _both(frames, max_in_flight=10**6, fail_submit_at=None) -> tuple[dict, dict]:
    got = [asyncio.run(_run(frames, g, max_in_flight, fail_submit_at)) for g in (True, False)]
    return got[0], got[1]


def _run_counting(frames, max_in_flight: int = 10**6) -> tuple[dict, list[bool]]:
    """_run with the gate, and what the gate answered for each request (True: taken)."""
    calls = []
    real = gateway_mod._gate

    def counting(s, obj):
        r = real(s, obj)
        calls.append(r)
        return r

    gateway_mod._gate = counting
    try:
        return asyncio.run(_run(frames, True, max_in_flight)), calls
    finally:
        gateway_mod._gate = real


def _same(c: dict, py: dict) -> None:
    for i, (a, b) in enumerate(zip(c["written"], py["written"])):
        assert b"".join(a) == b"".join(b), f"session {i} was sent different bytes"
    for k in c:
        assert c[k] == py[k], f"{k} differs"


# ----------------------------------------------------------------------------- strategies

GOOD_COIDS = [f"c{i}" for i in range(60)] + [None]
ODD_COIDS = ["", "x" * 65, "x" * 64, 'q"uote', "ü-id", "back\\sl", 7]
GOOD_PRICES = ["85.00", "85.05", "84.95", "85.10", "84.90", "85.20", "84.80"]
ODD_PRICES = ["85.001", "1e2", 8500, None, "abc", "-1.00", "0.00", "99999999999999999999.00"]


def _field(key, good, odd, present=0.5, good_share=0.93):
    """{key: value} or {}: present with probability ``present``, the value mostly from
    ``good`` (what a client sends) and otherwise from ``odd`` (what it should not)."""
    value = (
        st.sampled_from(good)
        if not odd
        else st.floats(0, 1).flatmap(lambda r: st.sampled_from(good if r < good_share else odd))
    )
    return st.floats(0, 1).flatmap(
        lambda r: value.map(lambda v: {key: v}) if r < present else st.just({})
    )


def _merge(*parts):
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


place_params = _merge(
    _field("instrument", ["CEA-2026"], ["NOPE", "", "x" * 65, 5], present=0.97),
    _field("side", ["buy", "sell"], ["BUY", None, 1], present=0.97),
    _field("qty", [1, 2, 3, 5, 8, 10], [0, -1, 2**70, 1.5, "3", True], present=0.97),
    _field("segment", ["main"], ["sme", "nosuch", "", None, 3]),
    _field("price", GOOD_PRICES, ODD_PRICES, present=0.9),
    _field("order_type", ["limit"], ["market", "stop", None], present=0.3),
    _field("tif", ["GTC", "DAY", "IOC"], ["FOK", "gtc", None], present=0.4),
    _field("post_only", [False, True], [0, None], present=0.2),
    _field("client_order_id", GOOD_COIDS, ODD_COIDS, present=0.8),
    _field("extra", [1], [], present=0.02),
)
ref_params = _merge(
    _field(
        "order_id", [41, 42, 43, 44, 45, 46, 47, 48, 10**6], [2**70, None, "5", True], present=0.4
    ),
    _field("client_order_id", GOOD_COIDS, ODD_COIDS, present=0.7),
    _field("qty", [1, 2, 4, 9, 20, None], [0, -3, 2**70, "2"], present=0.4),
    _field("price", GOOD_PRICES, ODD_PRICES, present=0.3),
    _field("extra", [1], [], present=0.02),
)
req_ids = st.floats(0, 1).flatmap(
    lambda r: (
        st.integers(0, 10**6)
        if r < 0.9
        else st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, True, "1", None, 1.0])
    )
)


@st.composite
def requests(draw):
    method = draw(
        st.sampled_from(
            ["place_order"] * 16
            + ["cancel_order"] * 6
            + ["amend_order"] * 6
            + ["open_orders", "nope", 5]
        )
    )
    params = draw(place_params if method == "place_order" else ref_params)
    req = {"req_id": draw(req_ids), "method": method, "params": params}
    tweak = draw(
        st.sampled_from(
            [None] * 40 + ["no_req_id", "no_params", "null_params", "list_params", "extra_key"]
        )
    )
    if tweak == "no_req_id":
        del req["req_id"]
    elif tweak == "no_params":
        del req["params"]
    elif tweak == "null_params":
        req["params"] = None
    elif tweak == "list_params":
        req["params"] = [params]
    elif tweak == "extra_key":
        req["id"] = 1
    return req


@st.composite
def ticks(draw):
    out = []
    for _ in range(draw(st.integers(1, 12))):
        tick = []
        for _ in range(draw(st.integers(1, 6))):
            who = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 2, 2, 3]))
            reqs = draw(st.lists(requests(), min_size=1, max_size=3))
            if len(reqs) == 1 and draw(st.booleans()):
                data = json.dumps(reqs[0])
            else:
                data = json.dumps(reqs)  # a batch
            tick.append((who, data.encode() if draw(st.booleans()) else data))
        out.append(tick)
    return out


# ----------------------------------------------------------------------------- the tests


@needs_gate
@streams_settings(80)
@given(frames=ticks())
def test_the_gate_answers_as_the_python_path_does(frames):
    c, py = _both(frames)
    _same(c, py)


@needs_gate
@streams_settings(30)
@given(frames=ticks())
def test_the_gate_answers_as_the_python_path_does_under_admission_control(frames):
    c, py = _both(frames, max_in_flight=2)  # the third order of a tick is OVERLOADED
    _same(c, py)


@needs_gate
def test_the_load_tests_mix_is_answered_alike():
    """4,000 requests of the load test's mix (resting orders, crossing IOCs, cancels and
    amends by client order id; bench.py's loadmix), 20 a tick over three sessions: nearly
    all taken by C, every byte the same."""
    mix = _mix_frames(4_000)
    frames = [[(f % 3, data) for f, data in mix[k : k + 20]] for k in range(0, len(mix), 20)]
    c, calls = _run_counting(frames)
    py = asyncio.run(_run(frames, False, 10**6))
    _same(c, py)
    assert calls.count(True) > 0.95 * len(mix)
    assert c["metrics"]["trades"] > 100


@needs_gate
def test_orders_are_refused_while_the_journal_lags_in_time_from_c_as_from_python():
    """max_journal_lag_ms: with commands in flight for longer than that, place_order and
    amend_order get OVERLOADED (cancels pass); the first order of a tick finds nothing in
    flight and is taken."""
    frames = [
        [
            (0, _place(1, "a1")),
            (0, _place(2, "a2")),
            (
                0,
                json.dumps(
                    {"req_id": 3, "method": "cancel_order", "params": {"client_order_id": "a1"}}
                ),
            ),
        ],
        [
            (0, _place(4, "a3")),
            (
                0,
                json.dumps(
                    {
                        "req_id": 5,
                        "method": "amend_order",
                        "params": {"client_order_id": "a3", "qty": 1},
                    }
                ),
            ),
        ],
    ]
    got = [asyncio.run(_run(frames, g, 10**6, slow_journal=True)) for g in (True, False)]
    _same(*got)
    out = b"".join(got[0]["written"][0])
    assert out.count(b"OVERLOADED") == 2 and got[0]["metrics"]["overloaded"] == 2
    assert got[0]["metrics"]["overloaded_by"] == {"journal_lag": 2}
    assert b'"req_id":3,"ok":true' in out and b'"req_id":4,"ok":true' in out


@needs_gate
def test_the_gate_answers_refusals_by_admission_control_itself():
    """Past saturation a refusal must cost less than an order: the gate answers OVERLOADED
    for well-formed orders itself (every byte as Python's), and hands a retry of a known
    client order id to Python, which answers it from the idempotency memory first."""
    frames = [[(0, _place(3 * t + k, f"o{t}-{k}")) for k in range(3)] for t in range(5)]
    frames.append([(0, _place(100, "o0-0"))])  # a retry of a durable order: replayed
    c, calls = _run_counting(frames, max_in_flight=2)  # the third of a tick is refused
    py = asyncio.run(_run(frames, False, 2))
    _same(c, py)
    assert c["metrics"]["overloaded_by"] == {"in_flight": 5}
    # (the first order's price string may be new to the process: then Python parses it and
    # caches it for C)
    assert calls[1:] == [True] * 14 + [False]
    assert c["metrics"]["idempotent_replays"] == 1


def _place(rid, coid, side="buy", price="85.00", qty=3, tif=None):
    p = {
        "instrument": "CEA-2026",
        "side": side,
        "qty": qty,
        "price": price,
        "client_order_id": coid,
    }
    if tif:
        p["tif"] = tif
    return json.dumps({"req_id": rid, "method": "place_order", "params": p})


@needs_gate
def test_the_usual_orders_are_taken_by_the_gate_and_answered_alike():
    """Resting orders, a crossing IOC, a cancel and amends by client order id, a retry of a
    known client order id, an unknown order: the C path takes the plain ones (messages_in
    moves only through C when the Python on_request is not reached) and the bytes match."""
    frames = [
        [
            (0, _place(1, "a1")),
            (0, _place(2, "a2", price="85.05")),
            (2, _place(3, "b1", "sell", "85.10")),
        ],
        [(2, _place(4, "b2", "sell", "85.00", qty=2, tif="IOC"))],
        [
            (
                0,
                json.dumps(
                    {"req_id": 5, "method": "cancel_order", "params": {"client_order_id": "a2"}}
                ),
            )
        ],
        [
            (
                0,
                json.dumps(
                    {
                        "req_id": 6,
                        "method": "amend_order",
                        "params": {"client_order_id": "a1", "qty": 0},
                    }
                ),
            ),
            (
                0,
                json.dumps(
                    {
                        "req_id": 7,
                        "method": "amend_order",
                        "params": {"client_order_id": "nope", "qty": 2},
                    }
                ),
            ),
        ],
        [(0, _place(8, "a1")), (1, _place(9, "cod-1", price="84.90"))],
        [
            (
                1,
                json.dumps(
                    [
                        {
                            "req_id": 10,
                            "method": "cancel_order",
                            "params": {"client_order_id": "cod-1"},
                        },
                        {"req_id": 11, "method": "cancel_order", "params": {"order_id": 10**6}},
                    ]
                ),
            )
        ],
    ]
    c, calls = _run_counting(frames)
    py = asyncio.run(_run(frames, False, 10**6))
    _same(c, py)
    # taken: 4 new orders, a cancel, 2 amends, the cod order, 2 cancels; declined: the retry
    # of a1 (idempotency is Python's), and nothing else
    assert calls.count(True) == 10 and calls.count(False) == 1
    assert b'"replayed":true' in b"".join(c["written"][0])


@needs_gate
def test_a_refused_submit_is_answered_as_in_python():
    """The runner refuses (a journal write failed): SHUTTING_DOWN to the request, /readyz's
    reason set - from C as from Python."""
    frames = [
        [(0, _place(1, "a1")), (0, _place(2, "a2"))],
        [
            (
                0,
                json.dumps(
                    {"req_id": 3, "method": "cancel_order", "params": {"client_order_id": "a1"}}
                ),
            )
        ],
    ]
    c, py = _both(frames, fail_submit_at=1)
    _same(c, py)
    assert c["failed"] and b"SHUTTING_DOWN" in b"".join(c["written"][0])


@needs_gate
def test_the_gate_declines_without_touching_anything():
    """What C does not take (over the rate limit, not a firm, a closed session, another
    method) leaves the session and the gateway as they were."""

    async def go():
        cfg = _settings()
        ex, keys = _mix_market(cfg)
        gw = Gateway(ex, MemoryRunner(ex), cfg.server)
        s = Session(gw, _Sink())
        gw.attach(s)
        s.transport = _Recorder()
        req = {
            "req_id": 1,
            "method": "place_order",
            "params": {"instrument": "CEA-2026", "side": "buy", "qty": 1, "price": "85.00"},
        }
        assert gateway_mod._gate(s, req) is False  # not authenticated
        gw.authenticate(s, keys[0])
        s.tokens = 0.5
        assert gateway_mod._gate(s, req) is False  # the refill is Python's
        assert s.tokens == 0.5 and gw.metrics.messages_in == 0 and ex.last_seq == before
        s.tokens = 5.0
        assert gateway_mod._gate(s, dict(req, method="open_orders")) is False
        assert gateway_mod._gate(s, dict(req, id=2)) is False
        s.closed = True
        assert gateway_mod._gate(s, req) is False
        s.closed = False
        assert gateway_mod._gate(s, req) is True
        assert s.tokens == 4.0 and gw.metrics.messages_in == 1 and ex.last_seq == before + 1

    cfg = _settings()
    before = _mix_market(cfg)[0].last_seq
    asyncio.run(go())


# ----------------------------------------------------------------------------- the fan-out


def _fan_pair(frames, **kw) -> tuple[dict, dict]:
    """The frames with the C fan-out and without it (the gate off in both: the requests take
    the Python path, so the fan-out is all that differs)."""
    got = [asyncio.run(_run(frames, False, 10**6, use_fanout=f, **kw)) for f in (True, False)]
    return got[0], got[1]


@needs_gate
@streams_settings(40)
@given(frames=ticks())
def test_the_fan_out_pushes_as_on_commit_does(frames):
    """Gateway.on_commit against its C stand-in (server/_accel.c: fanout), with a second
    executions subscriber of one firm and subscribers to balances, the book, trades and the
    ticker (see _run's rich_subs)."""
    _same(*_fan_pair(frames, rich_subs=True))


@needs_gate
@streams_settings(40)
@given(frames=ticks())
def test_gate_and_fan_out_together_answer_as_python_does(frames):
    c, py = (asyncio.run(_run(frames, g, 10**6, rich_subs=True)) for g in (True, False))
    _same(c, py)


@needs_gate
def test_the_fan_out_takes_the_usual_reports_itself(monkeypatch):
    """The load test's mix, one executions subscriber a firm: the C fan-out pushes every
    report but rejects itself (Gateway._on_report is called only for those), every byte
    as on_commit's; with a second subscriber of the firm, the firm's reports go to Python."""
    mix = _mix_frames(2_000)
    frames = [[(f % 3, data) for f, data in mix[k : k + 20]] for k in range(0, len(mix), 20)]
    handed = []
    real = Gateway._on_report

    def counting(self, ev):
        handed.append(ev.exec_type)
        return real(self, ev)

    monkeypatch.setattr(Gateway, "_on_report", counting)
    c, py = _fan_pair(frames)
    _same(c, py)
    assert c["metrics"]["commands"] > 1_000 and c["metrics"]["trades"] > 50
    handed.clear()
    asyncio.run(_run(frames, False, 10**6, use_fanout=True))
    assert set(handed) <= {"rejected"}, set(handed)
    handed.clear()
    c2, py2 = _fan_pair(frames, rich_subs=True)
    _same(c2, py2)
    assert "new" in handed  # the firm with two subscribers went to Python
    assert b'"channel":"balances"' in b"".join(c2["written"][1])


@needs_gate
def test_durable_replies_remember_and_fail_as_python_does():
    """Gateway._batch_durable against its C stand-in (replies): the load test's mix with an
    idempotency memory of 50 (the C evicts as remember does) and a batch whose journal write
    fails (its orders answered SHUTTING_DOWN, by the Python method the C hands it to)."""
    mix = _mix_frames(1_500)
    frames = [[(f % 3, data) for f, data in mix[k : k + 20]] for k in range(0, len(mix), 20)]
    for kw in ({"window": 50}, {"window": 50, "fail_batch_at": 3}):
        c, py = (asyncio.run(_run(frames, g, 10**6, **kw)) for g in (True, False))
        _same(c, py)
        assert len(c["idem_done"]) == 50
        # orders that finished after they were remembered (Gateway._idem_listen, idem_listen)
        assert [e for e in c["idem_done"].values() if e[2] and e[2][1] == "canceled"]
    assert b"SHUTTING_DOWN" in b"".join(c["written"][0])
