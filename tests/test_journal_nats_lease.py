"""The leader lease in a JetStream key-value bucket: taken by compare-and-set, kept by
renewals naming the last revision, freed by the bucket's ttl when its holder stops."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from exchange.journal.lease import LeaderLease


@pytest.fixture
def lease_url(nats_url):
    url = f"{nats_url}/l_{uuid.uuid4().hex[:12]}"
    yield url
    asyncio.run(_drop(url))


async def _drop(url: str) -> None:
    lease = LeaderLease(url, node="cleanup")
    await lease.open()
    try:
        await lease._nc.jetstream().delete_key_value(lease.bucket)
    finally:
        await lease.close()


async def test_one_holder_renewal_expiry_and_takeover(lease_url):
    a = LeaderLease(lease_url, node="a", address="ws://a/ws", ttl=2.0)
    b = LeaderLease(lease_url, node="b", address="ws://b/ws", ttl=2.0)
    await a.open()
    await b.open()
    try:
        assert await a.acquire() and a.held
        assert not await b.acquire()  # compare-and-set: taken
        assert (await b.holder())["address"] == "ws://a/ws"
        for _ in range(3):  # renewals keep it past the ttl
            await asyncio.sleep(0.8)
            assert await a.renew()
        assert not await b.acquire()
        # a stops renewing (dead, or stopped): the bucket's ttl frees the lease
        t0 = time.monotonic()
        assert await asyncio.wait_for(b.wait_for(poll=0.1), 10)
        waited = time.monotonic() - t0
        assert 1.0 <= waited <= 6.0, waited
        assert (await a.holder())["node"] == "b"
        # a wakes up: by its own clock it ran out, and the bucket says so too
        assert not a.held
        assert not await a.renew() and a.revision == 0
        a.revision, a.renewed_at = 1, time.monotonic()  # even if it thought it held it
        assert not await a.renew()  # the revision it names is not the current one
        # a clean stop hands over at once
        await b.release()
        assert await a.acquire()
    finally:
        await a.close()
        await b.close()


async def test_renewing_task_reports_a_lost_lease(lease_url):
    a = LeaderLease(lease_url, node="a", ttl=2.0, renew_every=0.2)
    b = LeaderLease(lease_url, node="b", ttl=2.0)
    await a.open()
    await b.open()
    try:
        assert await a.acquire()
        lost = asyncio.Event()
        a.start_renewing(lost.set)
        await asyncio.sleep(1.0)
        assert not lost.is_set() and a.held
        # someone overwrites it (an operator, or a node that saw it expire)
        await b._kv.put("leader", b'{"node": "b"}')
        await asyncio.wait_for(lost.wait(), 3)
        assert not a.held
    finally:
        await a.close()
        await b.close()


async def test_a_value_the_bucket_does_not_expire_is_taken_over_by_its_revision(lease_url):
    """The bucket's max age is the holder's ttl; if a value outlives it (seen after the KV
    stream's own leader died), a standby takes over once the revision stood still for 1.5
    ttl by its own clock - and the old holder, renewing late, is refused."""
    a = LeaderLease(lease_url, node="a", ttl=60.0)  # creates the bucket: max age 60 s
    b = LeaderLease(lease_url, node="b", ttl=1.0)
    await a.open()
    await b.open()
    try:
        assert await a.acquire()
        t0 = time.monotonic()
        assert await asyncio.wait_for(b.wait_for(poll=0.1), 10)
        assert 1.4 <= time.monotonic() - t0 <= 5.0
        assert (await a.holder())["node"] == "b"
        assert not await a.renew()
    finally:
        await a.close()
        await b.close()
