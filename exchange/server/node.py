"""Which node this is, and which node leads: what ``GET /api/v1/node`` answers.

A server on a single-writer journal (SQLite, PostgreSQL, a JetStream stream without
``--standby``) is the only node that takes orders: its role is ``single``. A server started
with ``serve --standby`` that took the leader lease (exchange/journal/lease.py) is the
``leader``; the answer then also names the lease as the bucket holds it now, so an operator
who opens the dashboard on a node sees whether that node still leads, and which node does
if not (a standby answers every HTTP request 503 ``NOT_LEADER`` with the leader's address,
so the dashboard is only ever served by a leader or a single node).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..journal import journal_kind as _backend


def journal_kind(target: str) -> str:
    """``sqlite``, ``postgresql``, ``nats`` (:func:`exchange.journal.journal_kind`), or
    ``memory`` for a server that keeps no journal (``:memory:``)."""
    return "memory" if target == ":memory:" else _backend(target)


class NodeStatus:
    """This node's name, role and journal, and the lease it holds (None: no lease)."""

    def __init__(self, node_id: str, journal: str, lease: Any = None):
        self.node_id = node_id
        self.journal = journal
        self.lease = lease  # exchange.journal.lease.LeaderLease while this node leads

    async def describe(self, timeout: float = 1.0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node_id": self.node_id,
            "journal": self.journal,
            "role": "single",
            "leader": None,
        }
        lease = self.lease
        if lease is None:
            return out
        out["role"] = "leader" if lease.held else "stepping_down"
        out["lease_ttl_s"] = lease.ttl
        try:
            holder = await asyncio.wait_for(lease.holder(), timeout)
        except Exception:  # the bucket unreachable (a NATS election): say so, not 500
            holder = None
            out["lease_readable"] = False
        else:
            out["lease_readable"] = True
        if holder:
            since = holder.get("since")
            out["leader"] = {
                "node_id": str(holder.get("node", "")),
                "address": str(holder.get("address", "")),
                "revision": int(holder.get("revision", 0)),
                # the holder's clock at its last renewal: seconds, for people
                "renewed_s_ago": round(max(0.0, time.time() - float(since)), 1)
                if isinstance(since, (int, float))
                else None,
            }
            if out["leader"]["node_id"] != self.node_id:
                out["role"] = "stepping_down"
        return out
