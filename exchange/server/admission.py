"""Admission control: what the gateway refuses before the core or the journal see it.

Per API key, a token bucket shared by the key's connections (:class:`KeyBucket`); for new
risk (place_order, amend_order), ``OVERLOADED`` while the server is behind
(:meth:`AdmissionMixin.admit`); for everything that would change state, ``SHUTTING_DOWN``
once the runner has refused a command or the server is stopping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import errors as E
from .protocol import OVERLOADED, ProtocolError

if TYPE_CHECKING:
    from .gateway import Session


LEASE_S = 0.02  # a session's lease of its key's rate limit: this many seconds' worth


class KeyBucket:
    """The rate limit of one API key across all its connections: a token bucket
    (``rate_limit_per_second``, ``rate_limit_burst``) that lends its tokens to the key's
    sessions in leases of LEASE_S worth of the rate. A session spends its lease
    (``Session.tokens``) on the C gate's path as before, and comes back here only when it is
    used up - once per lease, not per request - so the order path stays as it was while eight
    connections of one key get what one would, not eight times that. A session gives back what
    it has not spent when it closes. The long-run rate is the key's exactly (every token enters
    through this bucket); at any moment the key's sessions may hold up to one lease each."""

    __slots__ = ("tokens", "at", "rate", "burst", "chunk")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now
        self.chunk = max(1.0, min(self.burst, rate * LEASE_S))

    def lease(self, now: float) -> float:
        t = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        take = min(t, self.chunk)
        if take < 1.0:
            self.tokens = t
            return 0.0
        self.tokens = t - take
        return take

    def give_back(self, tokens: float) -> None:
        if tokens > 0:
            self.tokens = min(self.burst, self.tokens + tokens)


class AdmissionMixin:
    """The gateway's admission checks (``self.runner``, ``self.metrics``, the cfg bounds)."""

    def admit(self, s: Session) -> None:
        """Admission control for new risk (place_order, amend_order): refuse with OVERLOADED,
        before the core or the journal see the request, while the server is behind: the
        oldest command applied but not yet durable has waited ``max_journal_lag_ms`` or
        longer, or ``max_commands_in_flight`` or more are (the journal or the event loop
        lags), or ``overload_send_queue`` or more messages wait for this connection's socket
        (its client does not keep up). A refusal costs a fraction of an order, so past
        saturation the server keeps answering every request promptly instead of queueing
        replies until the slow-consumer rule drops the connection. Cancels are never refused
        for load: a firm can always take risk off. Returns when admitted.

        The bound on time is what keeps acknowledgements prompt whatever the rate; a bound on
        the count alone refuses orders the server has the CPU for once it gets faster: the
        same ~100 ms of journal lag holds more commands at a higher rate."""
        runner = self.runner
        lag = runner.journal_lag
        if lag and lag >= self._max_in_flight:
            why = "in_flight"
        elif lag and runner.journal_lag_seconds >= self._max_lag_s:
            why = "journal_lag"
        elif len(s.out) >= self._overload_queue:
            why = "send_queue"
        else:
            return
        raise self.overloaded(s, why)

    def overloaded(self, s: Session, why: str) -> ProtocolError:
        """A refusal by admission control (``why``: the bound), counted; the error to answer.
        Also called by the C gate, which answers well-formed orders' refusals itself: a
        refusal must cost less than an order, or past saturation the server falls further
        behind with every refusal and serves ever fewer orders (27,000/s at 84,000/s
        offered when refusals were built in Python)."""
        m = self.metrics
        m.overloaded += 1
        m.overloaded_by[why] = m.overloaded_by.get(why, 0) + 1
        return ProtocolError(
            OVERLOADED,
            f"server busy ({self.runner.journal_lag} commands not "
            f"yet durable, {len(s.out)} messages queued for this "
            f"connection); not applied, retry later",
            503,
        )

    def not_accepting(self) -> ProtocolError:
        """The error of a request that would change state while the server is not ready."""
        if self.failed is not None:
            return ProtocolError(E.SHUTTING_DOWN, f"not accepting commands: {self.failed}", 503)
        return ProtocolError(E.SHUTTING_DOWN, "the server is shutting down", 503)

    def not_ready(self, why: str) -> None:
        """The runner refused or lost a command: /readyz answers 503 from now on, and so does
        every request that would change state - orders included. ``accepting`` is the one
        switch the order path (the C gate too) reads, so a load balancer that sees 503 on
        /readyz never finds orders still being taken."""
        self.failed = why
        self.accepting = False

    def submit_failed(self, exc: Exception) -> ProtocolError:
        """The runner refused a command (it is stopped, or a journal write failed): /readyz
        turns 503, and this is the error the request gets."""
        self.not_ready(str(exc)[:200])
        return ProtocolError(E.SHUTTING_DOWN, f"not accepting commands: {exc}", 503)
