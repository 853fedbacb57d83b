"""A hot standby's core: a Follower applies what another process appends to a JetStream
journal, checks its state against every snapshot seal the leader journals, and a
CoreRunner takes it over without recovering from a snapshot."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from exchange.app.engine import build_exchange
from exchange.journal import CoreRunner, open_journal
from exchange.journal.follower import Follower, FollowerDiverged
from test_journal import clock_from, full_replay_hash, stream_commands
from test_journal_nats import drop


@pytest.fixture
def js_url(nats_url):
    url = f"{nats_url}/f_{uuid.uuid4().hex[:12]}"
    yield url
    asyncio.run(drop(url))


@pytest.mark.parametrize("forked", [False, True])
async def test_follower_keeps_the_leaders_state_and_takes_over(js_url, forked, monkeypatch):
    monkeypatch.setattr(CoreRunner, "fork_min_orders", 0 if forked else 10**9)
    cmds = stream_commands(1500, seed=9)
    leader = CoreRunner(
        build_exchange(), open_journal(js_url), snapshot_every_commands=250, clock=clock_from()
    )
    await leader.start()
    for c in cmds[:300]:
        await leader.submit(c)
    f = Follower(build_exchange(), open_journal(js_url))
    await f.start()  # from the leader's snapshot and the log after it
    # a forked snapshot's seal may still be on its way: the follower catches up to it
    for _ in range(50):
        await f.step()
        if f.exchange.state_hash() == leader.exchange.state_hash():
            break
        await asyncio.sleep(0.1)
    assert f.exchange.state_hash() == leader.exchange.state_hash()
    for i in range(300, 1200, 100):
        for c in cmds[i : i + 100]:
            await leader.submit(c)
        await f.step()
        assert f.exchange.last_seq <= leader.exchange.last_seq
    await asyncio.sleep(0.3)  # a forked snapshot's seal may still be on its way
    await f.step()
    assert f.exchange.state_hash() == leader.exchange.state_hash()
    assert f.seals_checked >= 2, f.seals_checked
    # the leader dies after a few more acknowledged commands the follower has not read
    for c in cmds[1200:1250]:
        await leader.submit(c)
    live = leader.exchange.state_hash()
    leader._accepting = False
    await leader.journal.close()
    # take over: the followed core continues, no snapshot is loaded
    r = CoreRunner(f.exchange, f.journal, adopt_hash=f.head_hash, clock=clock_from(2 * 10**18))
    await r.start()
    assert r.recovery["adopted"] and r.recovery["replayed"] >= 50
    assert r.exchange.state_hash() == live
    for c in cmds[1250:]:
        await r.submit(c)
    await r.stop(snapshot=False)
    full, n = await full_replay_hash(open_journal(js_url))
    assert full == r.exchange.state_hash() and n == r.exchange.last_seq


async def test_a_diverged_follower_is_caught_at_the_next_seal(js_url, monkeypatch):
    monkeypatch.setattr(CoreRunner, "fork_min_orders", 10**9)
    cmds = stream_commands(400, seed=4)
    leader = CoreRunner(
        build_exchange(), open_journal(js_url), snapshot_every_commands=10**9, clock=clock_from()
    )
    await leader.start()
    for c in cmds[:200]:
        await leader.submit(c)
    f = Follower(build_exchange(), open_journal(js_url))
    await f.start()
    f.exchange.next_order_id += 1  # a flipped bit in the follower's own state
    await leader.snapshot()  # the leader seals its state
    with pytest.raises(FollowerDiverged) as e:
        await f.step()
    assert "diverged" in str(e.value)
    await leader.stop(snapshot=False)
    await f.journal.close()
