"""Privacy by design, in one place: who may read a firm's records, and suppressed aggregates.

Two rules every read side of the exchange follows (docs/PRIVACY.md has the whole picture):

**Firm-specific records** (compliance statements and submissions, allocations, factors,
responsibility, sub-quotas, balances) are readable by the firm itself, by *its* verifier and by
operators - nobody else. The compliance records are what tie a verifier to a firm: a verifier
"has" a firm once it verified or rejected one of the firm's submissions (the record keeps the
verifier id; a verifier key acts as the verifier named by its label). A pending submission
that no verifier has taken yet is visible in the verifier queue to every registered verifier,
so it can be taken; nothing else of the firm is. :func:`may_read_firm` is the check,
:func:`require_firm_reader` raises the API's ``403 FORBIDDEN``.

**Published aggregates** (statistics over firms or platforms that anyone but an operator can
read: the benchmark inputs per product, responsibility factors per product, the
carbon-inclusive totals per action type) are suppressed where fewer than
``[privacy] min_contributors`` firms or platforms contribute to a group: such a group shows
``{"suppressed": true}`` and none of its figures. :func:`suppress` is the one helper every such
aggregate goes through.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

DEFAULT_MIN_CONTRIBUTORS = 3

__all__ = [
    "DEFAULT_MIN_CONTRIBUTORS",
    "suppress",
    "min_contributors",
    "verifier_id",
    "verifiers_of",
    "firms_of_verifier",
    "may_read_firm",
    "require_firm_reader",
]


# ------------------------------------------------------------------ suppressed aggregates


def _count(v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError("contributors is a count or a collection of contributor ids")
    if isinstance(v, int):
        return v
    return len(set(v))


def suppress(
    groups: Mapping[Hashable, Mapping[str, Any]],
    min_contributors: int,
    *,
    contributors: str = "contributors",
    complementary: bool = True,
) -> dict[Hashable, dict[str, Any]]:
    """Publishable copy of an aggregate: ``groups`` maps a group (a product, an action type,
    a sector) to its figures, one of which, ``contributors``, is either the number of distinct
    contributing firms/platforms or a collection of their ids.

    A group with at least ``min_contributors`` contributors is published as its figures with
    ``contributors`` as a count and ``"suppressed": False``; a group with fewer (but at least
    one) becomes ``{"suppressed": True}``: no figure, no count. With ``complementary`` (the
    default), when exactly one group is suppressed, the smallest published group is suppressed
    too, so a published grand total minus the other groups cannot reveal it. Groups with no
    contributor at all are published as they are (nothing to protect). ``min_contributors``
    below 1 suppresses nothing. The input is not changed."""
    counts = {k: _count(g.get(contributors, 0)) for k, g in groups.items()}
    low = {k for k, n in counts.items() if 0 < n < min_contributors}
    if complementary and len(low) == 1:
        rest = sorted(((n, str(k)), k) for k, n in counts.items() if k not in low and n > 0)
        if rest:
            low.add(rest[0][1])
    out: dict[Hashable, dict[str, Any]] = {}
    for k, g in groups.items():
        if k in low:
            out[k] = {"suppressed": True}
        else:
            out[k] = {**g, contributors: counts[k], "suppressed": False}
    return out


def min_contributors(settings: Any) -> int:
    """``[privacy] min_contributors`` of a Settings object (the default without one)."""
    p = getattr(settings, "privacy", None)
    return int(getattr(p, "min_contributors", DEFAULT_MIN_CONTRIBUTORS))


# ------------------------------------------------------------------ who reads a firm's records


def verifier_id(cred) -> str:
    """The verifier a verifier credential acts as: its label (else its key id), as in the
    compliance API."""
    return cred.label or cred.key_id


def verifiers_of(ex, firm_id: str, period: int | None = None) -> set[str]:
    """The verifiers that verified or rejected a submission of ``firm_id`` (of ``period``, or
    of any period): the firm's verifiers as far as the model knows."""
    m = ex.modules.get("compliance")
    recs = getattr(m, "records", None) or {}
    by_period = recs.get(firm_id) or {}
    out: set[str] = set()
    for p, rec in by_period.items():
        if period is not None and p != period:
            continue
        if rec.get("verifier"):
            out.add(rec["verifier"])
        for rej in rec.get("rejections") or ():
            if len(rej) > 1 and rej[1]:
                out.add(rej[1])
    return out


def firms_of_verifier(ex, verifier: str, period: int | None = None) -> set[str]:
    """The firms whose submission (of ``period``, or of any) ``verifier`` verified or
    rejected."""
    m = ex.modules.get("compliance")
    recs = getattr(m, "records", None) or {}
    return {f for f in recs if verifier in verifiers_of(ex, f, period)}


def may_read_firm(ex, cred, firm_id: str, period: int | None = None) -> bool:
    """Whether ``cred`` may read ``firm_id``'s records (of ``period``, where they are per
    period): an operator, the firm's own key (a platform's, for its account), or a verifier
    of the firm's submissions."""
    if cred is None:
        return False
    role = cred.role
    if role == "operator":
        return True
    if role == "firm" or role == "platform":  # a platform's key acts for its own account
        return cred.firm_id == firm_id
    if role == "verifier":
        return verifier_id(cred) in verifiers_of(ex, firm_id, period)
    return False


def require_firm_reader(ctx, firm_id: str, period: int | None = None) -> None:
    """Raise the API's ``403 FORBIDDEN`` unless the caller may read ``firm_id``'s records."""
    if not may_read_firm(ctx.ex, ctx.cred, firm_id, period):
        from .core import errors as E
        from .server.protocol import ProtocolError

        who = "a firm" if ctx.cred is not None and ctx.cred.role == "firm" else "this key"
        raise ProtocolError(
            E.FORBIDDEN,
            f"{who} may not read another firm's records (the firm, its verifier and operators may)",
            403,
        )
