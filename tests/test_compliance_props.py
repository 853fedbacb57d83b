"""Property tests: compliance commands with arbitrary (valid or junk) fields never raise out of
the core; a refused one changes nothing; an accepted one keeps the ledger's invariants and the
offset cap (offsets surrendered never exceed the cap in effect when each was made)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from exchange.compliance import mrv
from exchange.compliance.commands import (
    ConfigureCompliancePeriod,
    ProcessComplianceDeadline,
    RegisterVerifier,
    RejectSubmission,
    SetOffsetCap,
    SubmitActivityData,
    SurrenderUnits,
    VerifyEmissions,
)
from exchange.core.events import CommandRejected
from exchange.app.engine import build_exchange

from test_compliance import DEADLINE, DAY, base_market, business_hash, firm


def _market_bytes() -> bytes:
    m = base_market()
    firm(m, "A", cash=10_000_000, CEA_2026=5_000, CCER_2026=500, PHCER_2026=300)
    firm(m, "B", cash=10_000_000, CEA_2026=2_000, CEA_2025=100, CCER_2026=200)
    m.ok(
        SubmitActivityData(
            firm_id="A", period=2026, fuels=(("coal", 1_000),), process_emissions=200
        )
    )
    m.ok(VerifyEmissions(firm_id="A", period=2026, verifier="V1"))
    m.ok(SubmitActivityData(firm_id="B", period=2026, process_emissions=1_500))
    return m.ex.snapshot()


SNAP = _market_bytes()

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.lists(st.integers(0, 5), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
firm_ids = st.one_of(st.sampled_from(["A", "B", "NOPE", "@retired", "EXCHANGE"]), junk)
periods = st.one_of(st.sampled_from([2026, 2027, 1999]), junk)
instruments = st.one_of(
    st.sampled_from(
        [
            "CEA-2026",
            "CEA-2025",
            "CEA-2027",
            "CCER-2026",
            "PHCER-2026",
            "CCER-2027",
            "VER-2026",
            "X",
        ]
    ),
    junk,
)
qtys = st.one_of(st.integers(-5, 6_000), junk)
verifiers = st.one_of(st.sampled_from(["V1", "A", ""]), junk)
pairs = st.one_of(
    st.lists(
        st.tuples(
            st.sampled_from(["coal", "oil", "natural_gas", "peat", "CCER", "PHCER", "VER"]),
            st.one_of(st.integers(-10, 5_000), junk),
        ),
        max_size=3,
    ).map(tuple),
    junk,
)

commands = st.one_of(
    st.builds(
        SubmitActivityData,
        firm_id=firm_ids,
        period=periods,
        fuels=pairs,
        process_emissions=qtys,
        output=qtys,
    ),
    st.builds(VerifyEmissions, firm_id=firm_ids, period=periods, verifier=verifiers),
    st.builds(
        RejectSubmission,
        firm_id=firm_ids,
        period=periods,
        verifier=verifiers,
        reason=st.one_of(st.text(max_size=5), junk),
    ),
    st.builds(SurrenderUnits, firm_id=firm_ids, period=periods, instrument=instruments, qty=qtys),
    st.builds(
        SetOffsetCap,
        period=periods,
        cap_bps=st.one_of(st.integers(-10, 10_010), junk),
        sub_caps_bps=pairs,
        effective_ts=st.one_of(st.none(), junk),
        operator=st.one_of(st.text(max_size=3), junk),
    ),
    st.builds(ProcessComplianceDeadline, period=periods),
    st.builds(RegisterVerifier, verifier=verifiers, name=st.one_of(st.text(max_size=3), junk)),
    st.builds(
        ConfigureCompliancePeriod,
        period=periods,
        start_ts=qtys,
        eligible_vintages=st.one_of(st.lists(st.integers(2024, 2028)).map(tuple), junk),
        offset_cap_bps=st.one_of(st.integers(-5, 10_005), junk),
        offset_sub_caps_bps=pairs,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cmds=st.lists(commands, min_size=1, max_size=6),
    late=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_arbitrary_compliance_commands(cmds, late):
    ex = build_exchange()
    ex.restore(SNAP)
    comp = ex.modules["compliance"]
    seq = ex.last_seq
    ts = ex.now
    for cmd, after_deadline in zip(cmds, late):
        seq += 1
        ts = max(ts + 1, DEADLINE + DAY) if after_deadline else ts + 1
        before = business_hash(ex)
        evs = ex.apply(cmd, seq, ts)  # never raises
        if len(evs) == 1 and isinstance(evs[0], CommandRejected):
            assert evs[0].code and evs[0].message
            assert business_hash(ex) == before, (cmd, evs)
        ex.check_invariants()
    for firm_id, recs in comp.records.items():
        for period, rec in recs.items():
            obligation = comp.obligation_of(rec)
            assert rec["surrendered"] <= obligation
            offsets = 0
            for s in rec["surrenders"]:
                if s[3] == "offset":
                    offsets += s[5]
                    assert offsets <= mrv.cap_qty(obligation, s[7]), rec
    # the state still round-trips
    ex2 = build_exchange()
    ex2.restore(ex.snapshot())
    assert ex2.state_hash() == ex.state_hash()
