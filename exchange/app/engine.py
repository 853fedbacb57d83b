"""The one way to build the full state machine: the core plus its rule modules."""

from __future__ import annotations

from ..compliance.module import ComplianceModule
from ..core.exchange import Exchange

# Modules register here (rules, compliance). Order matters only for deterministic iteration.
MODULES: list[type] = [ComplianceModule]

from ..access.credentials import Credentials  # noqa: E402  (hashed API keys)

MODULES.append(Credentials)


from ..rules.module import RulesModule  # noqa: E402  (the rules module)

MODULES.append(RulesModule)


from ..compliance.fund import SmeFundModule  # noqa: E402  (the SME fund: grants to SMEs)

MODULES.append(SmeFundModule)


from ..registry.module import RegistryModule  # noqa: E402  (serials, removals, carbon-inclusive)

MODULES.append(RegistryModule)


def build_exchange(**kw) -> Exchange:
    return Exchange(modules=tuple(MODULES), **kw)


class Sequencer:
    """Gives each command its envelope - the next sequence number and a timestamp - and
    applies it, ``ex.apply(cmd, seq, ts)``. In-process users (demo, simulation, tests) use it
    where the server uses the journal. ``log`` keeps ``(cmd, seq, ts)`` of every command, in
    order: what a journal would hold."""

    def __init__(
        self,
        ex: Exchange | None = None,
        ts_step_ns: int = 1_000_000,
        start_ts: int = 1_767_225_600_000_000_000,
    ):
        self.ex = ex if ex is not None else build_exchange()
        self.ts = max(start_ts, self.ex.now)
        self.step = ts_step_ns
        self.log: list = []

    def __call__(self, cmd, ts: int | None = None) -> list:
        seq = self.ex.last_seq + 1
        self.ts = ts if ts is not None else self.ts + self.step
        self.log.append((cmd, seq, self.ts))
        return self.ex.apply(cmd, seq, self.ts)

    def run(self, cmds) -> list:
        out = []
        for c in cmds:
            out.extend(self(c))
        return out
