"""How the simulation reaches the exchange: commands in, events out.

:class:`InProcessGateway` stamps commands with :class:`exchange.app.engine.Sequencer` and applies
them to a core built by :func:`exchange.app.engine.build_exchange` (with every registered rules and
compliance module) — the same path the server's journal takes, without the network. The
simulation never touches the core's state directly; it reads only the events it gets back.
"""

from __future__ import annotations

from ..app.engine import Sequencer, build_exchange


class InProcessGateway:
    name = "in-process"

    def __init__(self, keep_log: bool = False):
        # book updates (L2 deltas) are for market-data subscribers; the agents do not read them
        self.seq = Sequencer(build_exchange(emit_book_updates=False))
        self.keep_log = keep_log
        self.commands = 0

    @property
    def exchange(self):
        """The core, for end-of-run checks (invariants, state hash) only."""
        return self.seq.ex

    def send(self, cmd) -> list:
        self.commands += 1
        return self.seq(cmd)

    def send_all(self, cmds) -> list[list]:
        out = []
        seq = self.seq
        for c in cmds:
            out.append(seq(c))
        self.commands += len(out)
        if not self.keep_log:
            seq.log.clear()
        return out

    def close(self) -> None:
        pass
