"""Stable reject reason codes.

Every reject, whether it comes from the core, the gateway or the admin API, carries one of
these codes. Codes are part of the public protocol (docs/PROTOCOL.md): never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class Reject(Exception):
    """A business rule refused a command. Raised *before* any state changes."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code.replace("_", " ").lower()


# Orders
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
INSUFFICIENT_HOLDINGS = "INSUFFICIENT_HOLDINGS"
OUTSIDE_PRICE_BAND = "OUTSIDE_PRICE_BAND"
BAD_TICK = "BAD_TICK"
BAD_LOT = "BAD_LOT"
BAD_QUANTITY = "BAD_QUANTITY"
BAD_PRICE = "BAD_PRICE"
OVER_MAX_ORDER_SIZE = "OVER_MAX_ORDER_SIZE"
HALTED = "HALTED"
MARKET_CLOSED = "MARKET_CLOSED"  # outside the trading calendar's sessions
NOT_PERMITTED_IN_SEGMENT = "NOT_PERMITTED_IN_SEGMENT"
TRADING_NOT_PERMITTED = "TRADING_NOT_PERMITTED"
UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
UNKNOWN_SEGMENT = "UNKNOWN_SEGMENT"
UNKNOWN_ORDER = "UNKNOWN_ORDER"
UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
POST_ONLY_WOULD_CROSS = "POST_ONLY_WOULD_CROSS"
FOK_NOT_FILLED = "FOK_NOT_FILLED"
BAD_ORDER_TYPE = "BAD_ORDER_TYPE"
NO_LIQUIDITY = "NO_LIQUIDITY"
NO_CHANGE = "NO_CHANGE"
SELF_TRADE_PREVENTED = "SELF_TRADE_PREVENTED"

# Operator / accounts
DUPLICATE_ACCOUNT = "DUPLICATE_ACCOUNT"
DUPLICATE_INSTRUMENT = "DUPLICATE_INSTRUMENT"
DUPLICATE_CHAIN = "DUPLICATE_CHAIN"
UNKNOWN_CHAIN = "UNKNOWN_CHAIN"
BAD_AMOUNT = "BAD_AMOUNT"
BAD_PARAMETER = "BAD_PARAMETER"
NOT_AN_SME = "NOT_AN_SME"
NOT_IN_CHAIN = "NOT_IN_CHAIN"
BAD_REVENUE_SHARE = "BAD_REVENUE_SHARE"
SYSTEM_ACCOUNT = "SYSTEM_ACCOUNT"
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"

# ---------------------------------------------------------------- gateway (exchange/server)
# Codes of the websocket gateway and the operator HTTP API (docs/PROTOCOL.md, "Error codes").
BAD_JSON = "BAD_JSON"  # frame is not valid UTF-8 JSON
BAD_REQUEST = "BAD_REQUEST"  # not a {"req_id", "method", "params"} envelope
BINARY_NOT_SUPPORTED = "BINARY_NOT_SUPPORTED"  # binary frame; the protocol is JSON text
FRAME_TOO_LARGE = "FRAME_TOO_LARGE"  # frame over server.max_frame_bytes
UNKNOWN_METHOD = "UNKNOWN_METHOD"
INVALID_PARAMS = "INVALID_PARAMS"  # wrong types, missing or extra fields
NOT_AUTHENTICATED = "NOT_AUTHENTICATED"  # auth first
AUTH_FAILED = "AUTH_FAILED"  # unknown or revoked API key
ALREADY_AUTHENTICATED = "ALREADY_AUTHENTICATED"
FORBIDDEN = "FORBIDDEN"  # the credential's role may not do this
RATE_LIMITED = "RATE_LIMITED"  # over server.rate_limit_per_second (per key) or an HTTP limit
TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"  # per-key/per-IP/total connection cap (429/503)
UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
SLOW_CONSUMER = "SLOW_CONSUMER"  # send queue over server.send_queue_max: disconnected
SHUTTING_DOWN = "SHUTTING_DOWN"
NOT_FOUND = "NOT_FOUND"  # HTTP: no such resource
INTERNAL_ERROR = "INTERNAL_ERROR"
# credentials module (exchange/access/credentials.py)
DUPLICATE_KEY = "DUPLICATE_KEY"
UNKNOWN_KEY = "UNKNOWN_KEY"
BAD_ROLE = "BAD_ROLE"

# ---- compliance (exchange/compliance): MRV, surrender, offset caps, deadline ----------------
COMPLIANCE_NOT_CONFIGURED = "COMPLIANCE_NOT_CONFIGURED"
UNKNOWN_PERIOD = "UNKNOWN_PERIOD"
UNKNOWN_FUEL = "UNKNOWN_FUEL"
BAD_ACTIVITY_DATA = "BAD_ACTIVITY_DATA"
ALREADY_VERIFIED = "ALREADY_VERIFIED"
NO_SUBMISSION = "NO_SUBMISSION"
NOT_A_VERIFIER = "NOT_A_VERIFIER"
DUPLICATE_VERIFIER = "DUPLICATE_VERIFIER"
REASON_REQUIRED = "REASON_REQUIRED"
NO_OBLIGATION = "NO_OBLIGATION"
INELIGIBLE_VINTAGE = "INELIGIBLE_VINTAGE"
INELIGIBLE_OFFSET_TYPE = "INELIGIBLE_OFFSET_TYPE"
OFFSET_CAP_EXCEEDED = "OFFSET_CAP_EXCEEDED"
OFFSET_SUBCAP_EXCEEDED = "OFFSET_SUBCAP_EXCEEDED"
EXCEEDS_OBLIGATION = "EXCEEDS_OBLIGATION"
CAP_OUT_OF_RANGE = "CAP_OUT_OF_RANGE"
CAP_EFFECTIVE_IN_PAST = "CAP_EFFECTIVE_IN_PAST"
PERIOD_CLOSED = "PERIOD_CLOSED"
DEADLINE_NOT_REACHED = "DEADLINE_NOT_REACHED"
# SME fund (exchange/compliance/fund.py)
SME_FUND_NOT_CONFIGURED = "SME_FUND_NOT_CONFIGURED"  # no configure_sme_fund yet
UNKNOWN_GRANT_APPLICATION = "UNKNOWN_GRANT_APPLICATION"
GRANT_NOT_PENDING = "GRANT_NOT_PENDING"  # approve: already approved, rejected or paid
GRANT_NOT_APPROVED = "GRANT_NOT_APPROVED"  # disburse: pending, rejected or already paid
GRANT_CLOSED = "GRANT_CLOSED"  # reject: already rejected or paid
SME_FUND_INSUFFICIENT = "SME_FUND_INSUFFICIENT"  # the grant exceeds the fund's balance
GRANT_SME_LIMIT_EXCEEDED = "GRANT_SME_LIMIT_EXCEEDED"  # over the limit per SME and period
GRANT_PERIOD_LIMIT_EXCEEDED = "GRANT_PERIOD_LIMIT_EXCEEDED"  # over the limit per period
# ---- end compliance --------------------------------------------------------------------------

# ---- rules (exchange/rules): benchmarks, allocation factor, allocation runs, sub-quota splits --
PERIOD_ALREADY_OPEN = "PERIOD_ALREADY_OPEN"  # pre_allocate of a period already pre-allocated
PERIOD_NOT_OPEN = "PERIOD_NOT_OPEN"  # close/settle a period that was never pre-allocated
PERIOD_ALREADY_CLOSED = "PERIOD_ALREADY_CLOSED"  # the rules already closed that period
NO_BENCHMARK = "NO_BENCHMARK"  # the firm's product has no benchmark
UNKNOWN_STRATEGY = "UNKNOWN_STRATEGY"  # split strategy not one of the five
NO_SPLIT_BASIS = "NO_SPLIT_BASIS"  # the strategy's weights are all zero (no data)
RESPONSIBILITY_DIVERGES = "RESPONSIBILITY_DIVERGES"  # input network is not productive
BAD_VERIFIED_DATA = "BAD_VERIFIED_DATA"  # emissions/output not whole numbers >= 0
# ---- end rules ---------------------------------------------------------------------------------

# ---- limits (exchange/core/units.py MAX_QTY, MAX_CASH; docs/CORE.md "Limits") -----------------
QUANTITY_LIMIT = "QUANTITY_LIMIT"  # would put more than MAX_QTY t outstanding / MAX_CASH deposited

# ---- credit registry (exchange/registry): serials, removals, carbon-inclusive batches ---------
REGISTRY_NOT_CONFIGURED = "REGISTRY_NOT_CONFIGURED"
SERIALS_REQUIRED = "SERIALS_REQUIRED"  # issue_units of a credit: issue it through the registry
DOUBLE_COUNTED = "DOUBLE_COUNTED"  # overlap, claimed action, uncancelled import, second retirement
BAD_SERIAL = "BAD_SERIAL"  # not ISSUER/PROJECT/VINTAGE/FIRST[-LAST]
UNKNOWN_SERIAL = "UNKNOWN_SERIAL"  # never issued (or of another instrument)
SERIAL_NOT_HELD = "SERIAL_NOT_HELD"  # the account does not hold the serials it names
UNKNOWN_PROJECT = "UNKNOWN_PROJECT"
UNKNOWN_PLATFORM = "UNKNOWN_PLATFORM"
UNKNOWN_ACTION_TYPE = "UNKNOWN_ACTION_TYPE"  # not in the conversion table
BAD_BATCH = "BAD_BATCH"  # a malformed carbon-inclusive batch (nothing of it is kept)
UNKNOWN_BATCH = "UNKNOWN_BATCH"
BATCH_NOT_PENDING = "BATCH_NOT_PENDING"


def _reject_code_enum() -> type[StrEnum]:
    """Every code above as one ``StrEnum`` (built from the constants, so the two cannot drift
    apart). Events and messages carry the plain ``str`` constants; the enum is for code that
    wants the closed set (``code in RejectCode``, exhaustive matches, documentation)."""
    codes = {k: v for k, v in globals().items() if k.isupper() and isinstance(v, str)}
    enum: type[StrEnum] = StrEnum("RejectCode", codes)  # type: ignore[misc]
    return enum


RejectCode = _reject_code_enum()
