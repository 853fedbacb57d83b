"""The NATS JetStream journal on the local server (127.0.0.1:4222, or TEST_NATS_URL): the
same records, chain, snapshots and audit commands as SQLite and PostgreSQL, one message per
batch behind the expected-last-sequence guard. Each test uses a stream of its own and
deletes it (and its snapshot bucket) afterwards: CI shares the server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from exchange.app.engine import build_exchange
from exchange.journal import (
    CoreRunner,
    JournalCorruptError,
    JournalError,
    RunnerFailed,
    open_journal,
    replay_into,
)
from exchange.journal.base import chain_rows
from exchange.journal.jetstream import (
    JetStreamJournal,
    StaleWriterError,
    decode_batch,
    encode_batch,
    parse_target,
)
from test_journal import cli, full_replay_hash, run_commands, stream_commands


def stream_url(base: str, **q) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    query = "&".join(f"{k}={v}" for k, v in q.items())
    return f"{base.rstrip('/')}/{name}" + (f"?{query}" if query else "")


async def drop(url: str) -> None:
    j = open_journal(url)
    await j.open()
    try:
        await j.drop()
    finally:
        await j.close()


@pytest.fixture
def js_url(nats_url):
    """A fresh stream on the test server, deleted afterwards."""
    url = stream_url(nats_url)
    yield url
    asyncio.run(drop(url))


# ------------------------------------------------------------------- no server needed


def test_target_parsing_and_selection():
    servers, stream, opts = parse_target(
        "nats://u:pw@10.0.0.1:4222,10.0.0.2:4222/MARKET?replicas=3&append_timeout=4"
    )
    assert servers == ["nats://u:pw@10.0.0.1:4222", "nats://u:pw@10.0.0.2:4222"]
    assert stream == "MARKET" and opts == {"replicas": 3, "append_timeout": 4.0}
    j = open_journal("nats://u:pw@h:4222/MARKET?replicas=3")
    assert isinstance(j, JetStreamJournal) and j.replicas == 3
    assert "pw" not in j.target and j.target == "nats://u@h:4222/MARKET?replicas=3"
    for bad in ("nats://h:4222", "nats://h:4222/", "nats://h:4222/a.b", "nats://h/S?x=1"):
        with pytest.raises(ValueError):
            open_journal(bad)


def test_batch_framing_round_trip_and_damage():
    rows = chain_rows([(1, 10, b'["snapshot_marker",0,null]'), (2, 11, b"[1]")], 0, bytes(32))
    body = encode_batch(rows)
    assert decode_batch(body) == [(s, t, p, h) for s, t, p, h in rows]
    with pytest.raises(JournalCorruptError):
        decode_batch(body[:-1], 7)


# ------------------------------------------------------------------- the local server


async def test_roundtrip_snapshots_and_recovery(js_url):
    cmds = stream_commands(1500, seed=5)
    r = await run_commands(
        open_journal(js_url), cmds, snapshot_every=400, stop_snapshot=False, concurrent=True
    )
    live = r.exchange.state_hash()
    r2 = CoreRunner(build_exchange(), open_journal(js_url))
    await r2.start()
    assert r2.recovery["snapshot_seq"] > 0 and r2.recovery["snapshot_proof"] == "sealed"
    assert r2.exchange.state_hash() == live
    await r2.stop(snapshot=False)
    full, n = await full_replay_hash(open_journal(js_url))
    assert full == live and n == r.exchange.last_seq
    j = open_journal(js_url)
    await j.open()
    try:
        assert len(await j.snapshot_seqs()) <= 3  # keep_snapshots prunes the bucket
        info = await j.stream_info()
        assert info.config.deny_delete and info.config.deny_purge
        # one message per batch, not per command
        assert info.state.messages < n // 4, (info.state.messages, n)
    finally:
        await j.close()


async def test_batches_split_to_fit_a_message_and_reads_start_anywhere(js_url):
    j = open_journal(js_url, max_message_bytes=2000)
    cmds = stream_commands(400, seed=3)
    r = await run_commands(j, cmds, concurrent=True, stop_snapshot=False)
    j = open_journal(js_url)
    await j.open()
    try:
        info = await j.stream_info()
        assert info.state.messages > 20  # the batches were split
        rows = [x async for x in j.read(1)]
        assert [s for s, _t, _d in rows] == list(range(1, r.exchange.last_seq + 1))
        mid = [s async for s, _t, _d in j.read(137, 151)]
        assert mid == list(range(137, 152))
        assert await j._hash_at(200) == [x async for x in j.read_rows(200, 200)][0][0][3]
    finally:
        await j.close()


async def test_cli_verify_replay_and_a_forged_record(js_url):
    cmds = stream_commands(600)
    r = await run_commands(open_journal(js_url), cmds, snapshot_every=250)
    out = cli("verify", js_url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"state_hash {r.exchange.state_hash()}"
    assert "equals the replayed state" in out.stdout
    to = 300
    ex = build_exchange()
    j = open_journal(js_url)
    await j.open()
    await replay_into(ex, j, 1, to)
    out = cli("replay", js_url, "--to", str(to))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"state_hash {ex.state_hash()}"
    # a record whose payload was changed but whose hash was recomputed from it, and a
    # genuine-looking record chained on top: the chain breaks at the forged one
    last, h = j.last_seq, j.last_hash
    async for rows in j.read_rows(last, last):
        _s, ts, p, _h = rows[0]
    forged = chain_rows(
        [(last + 1, ts + 1, bytes(p).replace(b"snapshot", b"snapshoT"))], last, bytes(32)
    )  # not chained on the real head
    on_top = chain_rows([(last + 2, ts + 2, bytes(p))], last + 1, forged[0][3])
    await j._publish(j._js, forged)
    await j._publish(j._js, on_top)
    await j.close()
    out = cli("verify", js_url)
    assert out.returncode == 1 and f"seq {last + 1}:" in out.stdout, out.stdout
    assert "state_hash" not in out.stdout
    with pytest.raises(JournalCorruptError) as e:
        await CoreRunner(build_exchange(), open_journal(js_url)).start()
    assert e.value.seq == last + 1
    assert h  # the real head was never replaced


async def test_a_stale_writer_can_never_append(js_url):
    """Two writers on one stream: the one whose view is stale is refused by the stream's
    expected-last-sequence guard, appends nothing, and its runner stops accepting."""
    cmds = stream_commands(300)
    await run_commands(open_journal(js_url), cmds[:100])
    a = CoreRunner(build_exchange(), open_journal(js_url))
    b = CoreRunner(build_exchange(), open_journal(js_url))
    await a.start()
    await b.start()
    before = b.exchange.last_seq
    await a.submit(cmds[100])  # a moves the stream on: b's view is stale
    with pytest.raises(RunnerFailed, match="StaleWriterError"):
        await b.submit(cmds[101])
    assert isinstance(b._failed, StaleWriterError)
    with pytest.raises(RunnerFailed):
        b.submit_nowait(cmds[102])
    await a.submit(cmds[103])  # the current writer goes on
    await a.stop(snapshot=False)
    await b.stop(snapshot=False)
    full, n = await full_replay_hash(open_journal(js_url))
    assert n == before + 2 and full == a.exchange.state_hash()


async def test_the_log_cannot_be_cut_through_the_api(js_url):
    await run_commands(open_journal(js_url), stream_commands(50))
    j = open_journal(js_url)
    await j.open()
    try:
        with pytest.raises(Exception):
            await j._js.delete_msg(j.stream, 1)
        with pytest.raises(Exception):
            await j._js.purge_stream(j.stream)
        with pytest.raises(JournalError, match="cannot drop its tail"):
            await j.truncate_from(10)
        assert (await j.stream_info()).state.first_seq == 1
    finally:
        await j.close()


async def test_readonly_open_of_a_missing_stream_says_so(nats_url):
    url = stream_url(nats_url)
    j = open_journal(url, readonly=True)
    with pytest.raises(JournalError, match="no journal"):
        await j.open()
    await j.close()
