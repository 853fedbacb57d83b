"""The durable command journal: SQLite and PostgreSQL backends, CoreRunner group commit,
snapshots + replay, corruption handling and the verify/replay CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import subprocess
import sys
import uuid

import orjson
import pytest

from exchange.core.commands import PlaceOrder, SnapshotMarker, encode_command
from exchange.app.engine import Sequencer, build_exchange
from exchange.journal import (
    CoreRunner,
    JournalCorruptError,
    JournalError,
    RunnerFailed,
    open_journal,
    replay_into,
)
from exchange.journal.base import GENESIS_HASH, Journal
from exchange.journal.codec import (
    decode_payload,
    dict_payload,
    payload_bytes,
    payload_dict,
    payload_line,
)
from exchange.journal.runner import snapshot_bytes
from exchange.core.commands import decode_command
from loadtest.streams import core_commands, generate, market_setup_commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stream_commands(n: int = 2000, seed: int = 7) -> list:
    """The commands alone: whoever applies them gives the envelopes (a runner its own)."""
    st = generate(n, seed)
    return market_setup_commands(st) + [c for c, _seq, _ts in core_commands(st)]


def clock_from(start: int = 1_767_225_600_000_000_000, step: int = 1000):
    t = [start]

    def clock():
        t[0] += step
        return t[0]

    return clock


async def run_commands(
    journal, cmds, *, snapshot_every=100_000, stop_snapshot=True, concurrent=False
):
    r = CoreRunner(
        build_exchange(), journal, snapshot_every_commands=snapshot_every, clock=clock_from()
    )
    await r.start()
    if concurrent:
        futs = []
        for i, c in enumerate(cmds):
            futs.append(r.submit_nowait(c)[1])
            if i % 100 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*futs)
    else:
        for c in cmds:
            await r.submit(c)
    await r.stop(snapshot=stop_snapshot)
    return r


async def full_replay_hash(journal) -> tuple[str, int]:
    await journal.open()
    try:
        ex = build_exchange()
        n = await replay_into(ex, journal, 1)
        ex.check_invariants()
        return ex.state_hash(), n
    finally:
        await journal.close()


@pytest.fixture
def sqlite_path(tmp_path):
    return str(tmp_path / "journal.sqlite")


# ------------------------------------------------------------------- unit: the chain


def _codec_samples():
    from exchange.core.commands import RegisterSupplyChain

    return stream_commands(300)[:200] + [
        RegisterSupplyChain(
            chain_id="c1", members=(("A", 0), ("B", 1)), edges=(("B", "A", 1_000_000),)
        ),
        SnapshotMarker(),
        PlaceOrder(
            account='A\nB "q" \u00e9',
            instrument="CEA-2026",
            side="buy",
            qty=1,
            price=100,
            client_order_id="x\ny",
        ),
    ]


def test_payload_codec_round_trip_and_old_object_records():
    for c in _codec_samples():
        wire = orjson.loads(orjson.dumps(encode_command(c)))  # what JSON gives back
        want = decode_command(wire)
        p = payload_bytes(c)
        assert payload_line(c) == p + b"\n" and b"\n" not in p
        assert orjson.loads(p)[0] == c.TYPE  # positional: [type, fields...]
        assert decode_payload(orjson.loads(p)) == want
        assert payload_dict(orjson.loads(p)) == wire
        assert dict_payload(encode_command(c)) == p
        # records written before the positional format: the encode_command object
        assert decode_payload(dict(wire)) == want
        assert payload_dict(dict(wire)) == wire


def test_payload_of_an_older_shorter_record_takes_the_new_fields_defaults():
    c = PlaceOrder(
        account="A", instrument="CEA-2026", side="sell", qty=3, price=100, client_order_id="k1"
    )
    old = orjson.loads(payload_bytes(c))[:-1]  # as if client_order_id came later
    got = decode_payload(old)
    assert got.client_order_id is None and got.qty == 3
    assert not hasattr(got, "seq") and not hasattr(got, "ts")  # the envelope is the record's
    with pytest.raises(ValueError, match="fields"):
        decode_payload(orjson.loads(payload_bytes(c)) + [1])


# Journal records are positional (exchange/journal/codec.py): a command's fields may only be
# added at the end, with a default. Reordering, renaming or removing one would misread every
# record already written - this list makes such a change fail here first.
COMMAND_FIELDS = {
    "add_instrument": ("symbol", "kind", "vintage", "offset_type", "reference_price"),
    "add_segment": ("name", "tick", "lot", "max_order_qty", "fee_bps", "access"),
    "amend_order": ("account", "order_id", "client_order_id", "qty", "price"),
    "apply_for_grant": ("sme", "period", "amount", "project", "verified_abatement_t", "applicant"),
    "approve_grant": ("application_id", "operator"),
    "assess_firm": ("firm_id", "technology_ppm", "efficiency_ppm", "hist_intensity_ppm"),
    "cancel_all": ("account", "instrument", "segment"),
    "cancel_order": ("account", "order_id", "client_order_id"),
    "close_period": ("period",),
    "configure_compliance": (
        "carbon_coefficients_ppm",
        "co2_per_c",
        "offset_types",
        "banking",
        "penalty_mode",
        "penalty_fixed_fine",
        "penalty_multiple_ppm",
        "late_fine",
        "penalty_fallback_price",
    ),
    "configure_compliance_period": (
        "period",
        "start_ts",
        "deadline_ts",
        "eligible_vintages",
        "offset_vintages",
        "offset_cap_bps",
        "offset_sub_caps_bps",
    ),
    "configure_sme_fund": (
        "penalty_to_fund_bps",
        "auction_to_fund_bps",
        "sme_period_limit",
        "period_limit",
        "operator",
    ),
    "create_sub_quota": (
        "parent",
        "sme",
        "instrument",
        "qty",
        "revenue_share_ppm",
        "surplus_rule",
        "shortfall_rule",
        "chain_id",
    ),
    "deposit_cash": ("account", "amount"),
    "disburse_grant": ("application_id", "operator"),
    "end_of_day": (),
    "clock": (),
    "set_trading_calendar": ("sessions", "tz", "weekdays", "holidays"),
    "fund_deposit": ("amount", "period", "ref", "operator"),
    "halt": ("instrument", "segment"),
    "issue_api_key": ("key_id", "role", "key_hash", "firm_id", "label", "scheme"),
    "issue_units": ("account", "instrument", "qty", "source", "ref"),
    "place_order": (
        "account",
        "instrument",
        "segment",
        "side",
        "qty",
        "price",
        "order_type",
        "tif",
        "post_only",
        "client_order_id",
    ),
    "pre_allocate": ("period",),
    "process_compliance_deadline": ("period", "operator"),
    "record_verified": ("firm_id", "period", "emissions", "output"),
    "register_firm": (
        "firm_id",
        "name",
        "sector",
        "product",
        "size_class",
        "stp_policy",
        "can_trade",
    ),
    "register_supply_chain": ("chain_id", "members", "edges"),
    "rehash_api_key": ("key_id", "key_hash", "scheme"),
    "register_verifier": ("verifier", "name"),
    "reject_grant": ("application_id", "reason", "operator"),
    "reject_submission": ("firm_id", "period", "verifier", "reason"),
    "resume": ("instrument", "segment"),
    "revoke_api_key": ("key_id",),
    "set_benchmark": ("product", "intensity_ppm"),
    "set_firm_trading": ("firm_id", "can_trade"),
    "set_input_use": ("firm_id", "period", "inputs"),
    "set_offset_cap": ("period", "cap_bps", "sub_caps_bps", "effective_ts", "operator"),
    "set_output_history": ("firm_id", "rows"),
    "set_price_band": ("instrument", "band_bps", "reference_price"),
    "set_rules_params": (
        "pre_ratio_ppm",
        "initial_phi_ppm",
        "phi_min_ppm",
        "phi_max_ppm",
        "max_step_ppm",
        "alpha_up_ppm",
        "alpha_down_ppm",
        "kappa_ppm",
        "kappa_max_ppm",
        "coupling_weights",
        "w_tech_ppm",
        "w_eff_ppm",
        "w_hist_ppm",
        "benchmark_step_ppm",
        "max_tightening_ppm",
        "allow_loosening",
        "max_loosening_ppm",
        "instrument_pattern",
        "allocation_total",
        "cap_tonnes",
    ),
    "settle_allocations": ("period",),
    "settle_sub_quotas": ("period",),
    "snapshot_marker": (),
    "split_sub_quotas": (
        "parent",
        "instrument",
        "amount",
        "smes",
        "strategy",
        "revenue_share_ppm",
        "surplus_rule",
        "shortfall_rule",
        "chain_id",
    ),
    "submit_activity_data": ("firm_id", "period", "fuels", "process_emissions", "output"),
    "surrender_units": ("firm_id", "period", "instrument", "qty"),
    "transfer_units": ("from_account", "to_account", "instrument", "qty"),
    "verify_emissions": ("firm_id", "period", "verifier"),
    "withdraw_cash": ("account", "amount"),
    # the credit registry (exchange/registry)
    "approve_action_batch": ("batch_id", "verifier"),
    "configure_registry": (
        "issuer",
        "buffer_bps",
        "removal_types",
        "carbon_inclusive_type",
        "max_batch_records",
    ),
    "declare_offset_class": ("offset_type", "ccer_equivalent", "operator"),
    "import_credits": ("registry", "account", "instrument", "issuer", "project", "first", "last"),
    "issue_credits": ("account", "instrument", "issuer", "project", "first", "last"),
    "record_external_cancellation": (
        "registry",
        "issuer",
        "project",
        "vintage",
        "first",
        "last",
        "reference",
    ),
    "register_platform": ("platform_id", "name"),
    "register_removal_project": ("project_id", "removal_type", "owner", "name"),
    "reject_action_batch": ("batch_id", "verifier", "reason"),
    "report_reversal": ("project_id", "qty", "cause", "reporter"),
    "retire_credits": ("account", "instrument", "qty", "serials", "beneficiary", "reason"),
    "set_conversion_factor": ("action_type", "unit", "g_co2e_per_unit", "operator"),
    "submit_action_batch": ("platform_id", "vintage", "records"),
    "verify_removal": (
        "project_id",
        "vintage",
        "verifier",
        "gross_removal",
        "project_emissions",
        "baseline_removal",
    ),
}


def test_command_fields_are_append_only():
    build_exchange()  # registers the modules' commands
    from exchange.core.commands import COMMAND_TYPES

    for name, fields in COMMAND_FIELDS.items():
        now = COMMAND_TYPES[name]._FIELDS
        assert now[: len(fields)] == fields, f"{name}: fields {now}, journal records {fields}"
        extra = now[len(fields) :]
        defaults = {
            f.name
            for f in dataclasses.fields(COMMAND_TYPES[name])
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
        assert set(extra) <= defaults, f"{name}: new fields {extra} need defaults"
    missing = set(COMMAND_TYPES) - set(COMMAND_FIELDS)
    assert not missing, f"add the new command types to COMMAND_FIELDS: {sorted(missing)}"


async def test_wal_stays_bounded_with_blocking_checkpoints(sqlite_path, monkeypatch):
    """The writer checkpoints on a thread; should the WAL outgrow JOURNAL_WAL_MAX_BYTES it
    checkpoints (RESTART) between batches - the log stays whole either way."""
    monkeypatch.setenv("JOURNAL_WAL_MAX_BYTES", str(256 << 10))
    cmds = stream_commands(3000)
    r = CoreRunner(build_exchange(), open_journal(sqlite_path), clock=clock_from())
    await r.start()
    sizes = []
    for k in range(0, len(cmds), 500):
        await asyncio.gather(*(r.submit(c) for c in cmds[k : k + 500]))
        sizes.append(os.path.getsize(sqlite_path + "-wal"))
    want = r.exchange.state_hash()
    await r.stop(snapshot=False)
    assert max(sizes) < 384 << 10, sizes  # the limit plus about one batch
    r2 = CoreRunner(build_exchange(), open_journal(sqlite_path))
    await r2.start()
    assert r2.exchange.state_hash() == want
    await r2.stop(snapshot=False)


async def test_log_with_older_object_records_recovers(sqlite_path):
    """A log whose first records hold the object form (written before the positional
    format) and the rest the positional form replays to the same state."""
    cmds = stream_commands(400)
    ex = build_exchange()
    j = open_journal(sqlite_path)
    await j.open()
    for i, c in enumerate(cmds[:200], 1):
        ex.apply(c, i, 1000 + i)
    await j.append(
        [(i, 1000 + i, orjson.dumps(encode_command(c))) for i, c in enumerate(cmds[:200], 1)]
    )
    await j.close()
    r = CoreRunner(build_exchange(), open_journal(sqlite_path), clock=clock_from(10**6))
    await r.start()
    assert r.exchange.state_hash() == ex.state_hash()
    for c in cmds[200:]:
        await r.submit(c)
        # the envelope the runner gave it: its core's last, one command at a time
        ex.apply(c, r.exchange.last_seq, r.exchange.now)
    await r.stop(snapshot=False)
    assert r.exchange.state_hash() == ex.state_hash()
    r2 = CoreRunner(build_exchange(), open_journal(sqlite_path))
    await r2.start()
    assert r2.exchange.state_hash() == ex.state_hash()
    await r2.stop(snapshot=False)


def test_open_journal_targets(tmp_path):
    from exchange.journal.sqlite import SQLiteJournal

    assert isinstance(open_journal(str(tmp_path / "x.sqlite")), SQLiteJournal)
    j = open_journal(f"sqlite://{tmp_path}/y.sqlite")
    assert isinstance(j, SQLiteJournal) and j.path == f"{tmp_path}/y.sqlite"
    assert type(open_journal("postgresql://u@h/db")).__name__ == "PostgresJournal"
    with pytest.raises(ValueError):
        open_journal("kafka://broker/topic")


async def test_sqlite_append_read_reopen(sqlite_path):
    j = open_journal(sqlite_path)
    await j.open()
    recs = [(i, 1000 + i, {"type": "snapshot_marker"}) for i in range(1, 6)]
    await j.append(recs[:3])
    await j.append(recs[3:])
    with pytest.raises(JournalError, match="out of sequence"):
        await j.append([(9, 1, {"type": "snapshot_marker"})])
    assert [r async for r in j.read()] == recs
    assert [r async for r in j.read(4)] == recs[3:]
    head = j.last_hash
    await j.close()
    j2 = open_journal(sqlite_path)
    await j2.open()
    assert (j2.last_seq, j2.last_hash) == (5, head) and head != GENESIS_HASH
    con = sqlite3.connect(sqlite_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    await j2.close()


# ------------------------------------------------------------------- runner


async def test_runner_journal_lag_in_commands_and_in_time(sqlite_path):
    """journal_lag counts the commands applied but not durable, journal_lag_seconds is how
    long the oldest of them has waited (admission control refuses orders on either): both
    grow while a write is slow and go back to 0 once it is durable."""
    j = open_journal(sqlite_path)
    gate = asyncio.Event()
    real_append = j._append_rows

    async def slow(records):
        await gate.wait()
        return await real_append(records)

    j._append_rows = slow
    r = CoreRunner(build_exchange(), j, clock=clock_from())
    await r.start()
    assert r.journal_lag == 0 and r.journal_lag_seconds == 0.0
    cmds = stream_commands(30)
    futs = []
    for c in cmds[:10]:
        futs.append(r.submit_nowait(c)[1])
    await asyncio.sleep(0.05)  # the first batch is being written, held by the gate
    assert r.journal_lag == 10 and r.journal_lag_seconds >= 0.05
    for c in cmds[10:20]:
        futs.append(r.submit_nowait(c)[1])
    assert r.journal_lag == 20 and r.journal_lag_seconds >= 0.05  # still the oldest's wait
    gate.set()
    await asyncio.gather(*futs)
    assert r.journal_lag == 0 and r.journal_lag_seconds == 0.0
    await r.stop()


async def test_runner_group_commit_and_durability(sqlite_path):
    """Events come back only after the batch is durable; many commands share a batch;
    listeners see every command once, in seq order, after durability."""
    j = open_journal(sqlite_path)
    appended: list[list[int]] = []
    real_append = j._append_rows

    async def spy(records):
        out = await real_append(records)
        appended.append([r[0] for r in records])
        return out

    j._append_rows = spy
    r = CoreRunner(build_exchange(), j, clock=clock_from())
    await r.start()
    assert r.is_empty
    seen = []
    seq_of = {}  # id(cmd) -> the seq the listener heard it with

    def listen(cmd, seq, ts, events):
        seen.append((seq, r.durable_seq >= seq))
        seq_of[id(cmd)] = seq

    r.add_listener(listen)
    cmds = stream_commands(600)
    setup, orders = cmds[:210], cmds[210:]
    for c in setup:
        await r.submit(c)
    assert not r.is_empty

    async def client(c):
        ev = await r.submit(c)
        assert r.durable_seq >= seq_of[id(c)]  # acknowledged only when durable
        return ev

    results = await asyncio.gather(*(client(c) for c in orders))
    assert all(isinstance(ev, list) for ev in results)
    assert r.journal_lag == 0
    n = r.exchange.last_seq
    assert [s for s, _ in seen] == list(range(1, n + 1))
    assert all(durable for _, durable in seen)
    concurrent_batches = [b for b in appended if b[0] > len(setup)]
    assert len(concurrent_batches) < len(orders) / 10, "group commit should batch"
    await r.stop()
    j2 = open_journal(sqlite_path)
    await j2.open()
    rows = [(s, t) async for s, t, _ in j2.read()]
    await j2.close()
    assert [s for s, _ in rows] == list(range(1, n + 2))  # + the final snapshot marker
    # ts strictly increasing    assert all(a[1] < b[1] for a, b in zip(rows, rows[1:]))


async def test_runner_restart_recovers_same_state(sqlite_path):
    cmds = stream_commands(1500)
    r = await run_commands(
        open_journal(sqlite_path), cmds, snapshot_every=400, stop_snapshot=False, concurrent=True
    )
    live_hash, last = r.exchange.state_hash(), r.exchange.last_seq
    r2 = CoreRunner(build_exchange(), open_journal(sqlite_path), snapshot_every_commands=400)
    await r2.start()
    assert r2.recovery["snapshot_seq"] > 0 and r2.recovery["replayed"] > 0
    assert r2.exchange.last_seq == last and r2.exchange.state_hash() == live_hash
    assert not r2.is_empty
    r2.exchange.check_invariants()
    # it goes on from where it stopped: seq continues, ts never goes back
    ev = await r2.submit(
        PlaceOrder(account="B000", instrument="CEA-2026", side="buy", price=8400, qty=1)
    )
    assert r2.exchange.last_seq == last + 1 and ev
    await r2.stop()


@pytest.mark.parametrize("serialise", ["forked child", "inline"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres", "nats"])
async def test_snapshot_plus_replay_equals_full_replay(
    backend, serialise, tmp_path, request, monkeypatch
):
    # the runner serialises a small state inline and a large one in a forked child
    # (CoreRunner.fork_min_orders); both paths must store the same bytes
    monkeypatch.setattr(CoreRunner, "fork_min_orders", 0 if serialise == "forked child" else 10**9)
    if backend == "sqlite":
        target, opts = str(tmp_path / "j.sqlite"), {}
    elif backend == "nats":
        target, opts = f"{request.getfixturevalue('nats_url')}/t_{uuid.uuid4().hex[:12]}", {}
    else:
        target = request.getfixturevalue("postgres_dsn")
        opts = {"schema": "t_" + uuid.uuid4().hex[:12]}
    cmds = stream_commands(2500, seed=11)
    try:
        r = await run_commands(
            open_journal(target, **opts),
            cmds,
            snapshot_every=700,
            stop_snapshot=False,
            concurrent=True,
        )
        live = r.exchange.state_hash()
        forked = serialise == "forked child"
        assert (r.snapshots_forked > 0) == forked and (r.snapshots_inline > 0) != forked
        # recovery: latest snapshot + the log after it
        r2 = CoreRunner(build_exchange(), open_journal(target, **opts))
        await r2.start()
        rec = r2.recovery
        assert rec["snapshot_seq"] > 0 and rec["replayed"] > 0, rec
        snap_hash = r2.exchange.state_hash()
        await r2.stop(snapshot=False)
        full, n = await full_replay_hash(open_journal(target, **opts))
        assert n == r.exchange.last_seq
        assert snap_hash == full == live
        # and every stored snapshot equals the state replayed to its seq
        j = open_journal(target, **opts)
        await j.open()
        seqs = await j.snapshot_seqs()
        assert seqs
        for s in seqs:
            ex = build_exchange()
            await replay_into(ex, j, 1, s)
            snap = await j.latest_snapshot(max_seq=s)
            assert snap[0] == s and snap[1] == snapshot_bytes(ex)
        await j.close()
    finally:
        if backend == "postgres":
            import asyncpg

            con = await asyncpg.connect(target)
            await con.execute(f'DROP SCHEMA IF EXISTS "{opts["schema"]}" CASCADE')
            await con.close()
        elif backend == "nats":  # the server is shared: leave no stream behind
            j = open_journal(target)
            await j.open()
            await j.drop()
            await j.close()


def test_snapshot_serialised_in_a_child_only_when_the_state_is_large(sqlite_path):
    r = CoreRunner(build_exchange(), open_journal(sqlite_path), fork_snapshots=True)
    ex = build_exchange()
    for i, c in enumerate(stream_commands(600, seed=3), 1):
        ex.apply(c, i, i)
    resting = sum(len(b.orders) for b in ex.books.values())
    assert resting > 0
    r.fork_min_orders = resting + 1
    assert not r._snapshot_in_child(ex)  # small: inline
    r.fork_min_orders = resting
    assert r._snapshot_in_child(ex)  # as many resting orders as the threshold: a child
    r.fork_min_orders = 10**9
    r._last_snapshot_size = r.fork_min_bytes  # the previous snapshot was large: a child
    assert r._snapshot_in_child(ex)
    r.fork_snapshots = False  # where fork is unavailable, always inline
    assert not r._snapshot_in_child(ex)


async def test_time_based_snapshot(sqlite_path):
    r = CoreRunner(
        build_exchange(),
        open_journal(sqlite_path),
        snapshot_every_commands=10**9,
        snapshot_every_seconds=0.05,
        clock=clock_from(),
    )
    await r.start()
    cmds = stream_commands(300)
    for c in cmds[:50]:
        await r.submit(c)
    await asyncio.sleep(0.08)
    for c in cmds[50:60]:
        await r.submit(c)
    await r.stop(snapshot=False)
    j = open_journal(sqlite_path)
    await j.open()
    markers = [s async for s, _, d in j.read() if d["type"] == SnapshotMarker.TYPE]
    assert markers and markers[-3:] == await j.snapshot_seqs()  # keeps the newest 3
    await j.close()


class FailingJournal(Journal):
    """Accepts the first batch, then fails like a full disk."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    async def open(self):
        pass

    async def close(self):
        pass

    async def _append_rows(self, records):
        self.calls += 1
        if self.calls > 1:
            raise OSError(28, "No space left on device")
        return list(records)[-1][0], b"x" * 32

    async def _snapshot_rows(self):
        return []

    async def _snapshot_data(self, seq):
        return None

    async def write_snapshot(self, seq, data):
        pass


async def test_journal_failure_stops_accepting():
    r = CoreRunner(build_exchange(), FailingJournal(), clock=clock_from())
    await r.start()
    cmds = stream_commands(100)
    await r.submit(cmds[0])
    with pytest.raises(RunnerFailed, match="No space left"):
        await r.submit(cmds[1])
    with pytest.raises(RunnerFailed):
        await r.submit(cmds[2])
    await r.stop()


# ------------------------------------------------------------------- corruption


async def _small_log(path, n=300):
    cmds = stream_commands(n)
    r = await run_commands(open_journal(path), cmds, stop_snapshot=False)
    return r.exchange.last_seq, r.exchange.state_hash()


async def test_torn_last_record_is_truncated_with_warning(sqlite_path, caplog):
    last, _ = await _small_log(sqlite_path)
    con = sqlite3.connect(sqlite_path)
    con.execute("UPDATE journal SET payload = substr(payload, 1, 7) WHERE seq = ?", (last,))
    con.commit()
    con.close()
    with caplog.at_level(logging.WARNING, logger="exchange.journal"):
        r = CoreRunner(build_exchange(), open_journal(sqlite_path))
        await r.start()
    assert f"last record seq {last} is torn" in caplog.text
    assert r.exchange.last_seq == last - 1 and r.recovery["truncated"] == [last]
    r.exchange.check_invariants()
    await r.stop(snapshot=False)


@pytest.mark.parametrize("damage", ["modify", "delete"])
async def test_middle_record_damage_is_refused(sqlite_path, damage):
    last, _ = await _small_log(sqlite_path)
    bad = last // 2
    con = sqlite3.connect(sqlite_path)
    if damage == "modify":
        # one more byte: still valid JSON, a different record
        con.execute(
            "UPDATE journal SET payload = CAST(payload || ' ' AS BLOB) WHERE seq = ?", (bad,)
        )
    else:
        con.execute("DELETE FROM journal WHERE seq = ?", (bad,))
    con.commit()
    con.close()
    r = CoreRunner(build_exchange(), open_journal(sqlite_path))
    with pytest.raises(JournalCorruptError, match=f"seq {bad}\\b") as ei:
        await r.start()
    assert ei.value.seq == bad


async def test_rehashed_tamper_is_caught_at_the_next_record(sqlite_path):
    """Modifying a record and recomputing its own hash still breaks the chain after it."""
    from exchange.journal.base import record_hash

    last, _ = await _small_log(sqlite_path)
    bad = last // 2
    con = sqlite3.connect(sqlite_path)
    (prev,) = con.execute("SELECT hash FROM journal WHERE seq=?", (bad - 1,)).fetchone()
    ts, p = con.execute("SELECT ts, payload FROM journal WHERE seq=?", (bad,)).fetchone()
    p2 = p.replace(b",", b", ", 1)  # still valid JSON, a different record
    con.execute(
        "UPDATE journal SET payload=?, hash=? WHERE seq=?",
        (p2, record_hash(prev, bad, ts, p2), bad),
    )
    con.commit()
    con.close()
    j = open_journal(sqlite_path)
    await j.open()
    with pytest.raises(JournalCorruptError) as ei:
        await j.verify_chain()
    assert ei.value.seq == bad + 1
    await j.close()


# ------------------------------------------------------------------- CLI


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exchange", "journal", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_verify_and_tamper_detection(sqlite_path):
    cmds = stream_commands(800)
    r = await run_commands(open_journal(sqlite_path), cmds, snapshot_every=300)
    out = cli("verify", sqlite_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == f"state_hash {r.exchange.state_hash()}"
    assert "equals the replayed state" in out.stdout
    bad = r.exchange.last_seq // 2
    con = sqlite3.connect(sqlite_path)
    con.execute(
        "UPDATE journal SET payload = replace(payload, '\"qty\":', '\"qty\":1') WHERE seq = ?",
        (bad,),
    )
    con.commit()
    con.close()
    out = cli("verify", sqlite_path)
    assert out.returncode != 0
    assert f"seq {bad}:" in out.stdout and "state_hash" not in out.stdout


async def test_cli_replay_to_seq(sqlite_path):
    cmds = stream_commands(800)
    await run_commands(open_journal(sqlite_path), cmds, snapshot_every=300)
    to = 650  # past a snapshot: the replay starts from the one at or before it
    ref = Sequencer(build_exchange())
    j = open_journal(sqlite_path)
    await j.open()
    async for seq, ts, d in j.read(1, to):
        ref.ex.apply(decode_command(d), seq, ts)
    await j.close()
    out = cli("replay", sqlite_path, "--to", str(to), "--book", "CEA-2026/main")
    assert out.returncode == 0, out.stderr
    assert "snapshot seq 6" in out.stdout  # the marker at 6xx
    assert out.stdout.strip().splitlines()[-1] == f"state_hash {ref.ex.state_hash()}"
    assert "CEA-2026 / main" in out.stdout


# ------------------------------------------------------------------- PostgreSQL


async def test_postgres_roundtrip_and_tamper(postgres_dsn):
    schema = "t_" + uuid.uuid4().hex[:12]
    j = open_journal(postgres_dsn, schema=schema)
    try:
        cmds = stream_commands(400)
        r = await run_commands(j, cmds, snapshot_every=150)
        full, n = await full_replay_hash(open_journal(postgres_dsn, schema=schema))
        assert full == r.exchange.state_hash() and n == r.exchange.last_seq
        out = cli("verify", postgres_dsn, "--schema", schema)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip().splitlines()[-1] == f"state_hash {full}"
        import asyncpg

        con = await asyncpg.connect(postgres_dsn)
        bad = n // 2
        await con.execute(
            f'UPDATE "{schema}".journal_commands SET payload = '
            f"payload || '\\x20'::bytea WHERE seq = $1",
            bad,
        )
        await con.close()
        out = cli("verify", postgres_dsn, "--schema", schema)
        assert out.returncode == 1 and f"seq {bad}:" in out.stdout
    finally:
        import asyncpg

        con = await asyncpg.connect(postgres_dsn)
        await con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await con.close()


async def test_chain_check_in_child_process_refuses_damage_before_the_snapshot(sqlite_path):
    """Records the snapshot stands for are still checked on start (here by the child)."""
    cmds = stream_commands(600)
    await run_commands(open_journal(sqlite_path), cmds, snapshot_every=500, stop_snapshot=False)
    r = CoreRunner(build_exchange(), open_journal(sqlite_path))
    r.child_check_min = 0
    await r.start()
    assert r.recovery["chain_check"] == "child process" and r.recovery["snapshot_seq"] > 200
    await r.stop(snapshot=False)
    con = sqlite3.connect(sqlite_path)
    con.execute(
        "UPDATE journal SET payload = replace(payload, '\"qty\":', '\"qty\":1') WHERE seq = 200"
    )
    con.commit()
    con.close()
    r = CoreRunner(build_exchange(), open_journal(sqlite_path))
    r.child_check_min = 0
    with pytest.raises(JournalCorruptError, match="seq 200:") as ei:
        await r.start()
    assert ei.value.seq == 200


def test_journal_benchmark_smoke(tmp_path):
    """`python -m loadtest.journal` runs end to end on a small stream and writes every key
    (no timing is asserted)."""
    out = tmp_path / "journal.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.journal",
            "--commands",
            "3000",
            "--repeat",
            "2",
            "--no-postgres",
            "--recovery-commands",
            "0",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    import json

    res = json.loads(out.read_text())
    for key in (
        "in_memory_cmds_per_s",
        "durable_cmds_per_s",
        "durable_ratio",
        "durable_ratio_pairs",
        "replay_cmds_per_s",
        "recovery_s_per_million",
    ):
        assert key in res, key
    assert len(res["durable_ratio_pairs"]) == 2
    assert len(res["durable_no_snapshots_ratio_pairs"]) == 2
    assert res["durable_no_snapshots_cmds_per_s"] > 0
    assert res["replay_equals_live"] is True


async def test_writer_process_death_stops_the_runner(sqlite_path):
    """The SQLite writer process dies (say, the OOM killer): the next batch fails, nothing
    more is acknowledged, the runner refuses further commands, and a restart recovers
    exactly what was acknowledged."""
    cmds = stream_commands(300)
    r = CoreRunner(build_exchange(), open_journal(sqlite_path), clock=clock_from())
    await r.start()
    for c in cmds[:100]:
        await r.submit(c)
    acked = r.exchange.last_seq
    ex = build_exchange()
    j = open_journal(sqlite_path)
    r.journal._proc.kill()
    r.journal._proc.wait()
    with pytest.raises(RunnerFailed, match="died"):
        await r.submit(cmds[100])
    with pytest.raises(RunnerFailed):
        await r.submit(cmds[101])
    await r.stop()
    r2 = CoreRunner(ex, j)
    await r2.start()
    assert r2.exchange.last_seq == acked
    await r2.stop(snapshot=False)


def test_a_journal_targets_kind_is_read_in_one_place():
    """journal_kind is the one reading of a target's form: open_journal, the node status,
    serve --standby and --market-data (is_replicated) all go by it, TLS URLs included."""
    from exchange.journal import is_replicated, journal_kind

    cases = {
        "data/journal.sqlite": "sqlite",
        "sqlite:///var/lib/x.sqlite": "sqlite",
        "postgresql://u@h/db": "postgresql",
        "postgres://u@h/db": "postgresql",
        "nats://127.0.0.1:4222/MARKET": "nats",
        "nats://a:4222,b:4222/MARKET": "nats",
        "tls://nats.example:4222/MARKET": "nats",
    }
    for target, kind in cases.items():
        assert journal_kind(target) == kind, target
        assert is_replicated(target) is (kind == "nats"), target
    with pytest.raises(ValueError, match="unknown journal target"):
        journal_kind("kafka://broker/topic")
    assert not is_replicated("kafka://broker/topic")
    assert not is_replicated(None) and not is_replicated("")
