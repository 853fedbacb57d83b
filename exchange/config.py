"""Settings: ``config/default.toml`` loaded into pydantic models.

Human-facing values (prices in CNY as decimal strings, percentages) are converted to the core's
integers (fen, basis points) by :mod:`exchange.core.units` and nowhere else.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .compliance.config import ComplianceConfig
from .core.units import parse_price
from .rules.config import RulesConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentConfig(Strict):
    name: str = Field(description="main, sme, or chain (the template of every chain:<id> book)")
    tick: int = Field(1, gt=0, description="price tick in fen")
    lot: int = Field(1, gt=0, description="quantity lot in tonnes")
    max_order_qty: int = Field(99_999, gt=0, description="largest order in tonnes")
    fee_bps: int = Field(0, ge=0, le=10_000, description="fee per side, basis points of notional")
    access: Literal["all", "sme_sell_any_buy", "sme_only", "members"] = "all"


class InstrumentConfig(Strict):
    symbol: str
    kind: Literal["allowance", "offset"] = "allowance"
    vintage: int = 0
    offset_type: str | None = None
    reference_price: str = Field("0", description="previous close in CNY, e.g. \"85.00\"")

    @field_validator("reference_price")
    @classmethod
    def _price(cls, v: str) -> str:
        parse_price(v)
        return v

    @property
    def reference_price_fen(self) -> int:
        return parse_price(self.reference_price)


class MarketConfig(Strict):
    price_band_bps: int = Field(1000, ge=0, le=10_000, description="+- band around reference")
    segments: list[SegmentConfig]
    instruments: list[InstrumentConfig]


class FirmConfig(Strict):
    firm_id: str
    name: str = ""
    sector: str = ""
    product: str = ""
    size_class: Literal["large", "sme"] = "large"
    stp_policy: Literal["cancel_resting", "cancel_incoming", "cancel_both"] = "cancel_resting"
    cash: str = Field("0", description="opening cash deposit in CNY")
    holdings: dict[str, int] = Field(default_factory=dict, description="instrument -> tonnes")
    api_key: str | None = Field(None, description="demo API key (demo market only)")

    @property
    def cash_fen(self) -> int:
        return parse_price(self.cash)


class ChainMemberConfig(Strict):
    firm: str
    tier: int = Field(ge=0)


class ChainEdgeConfig(Strict):
    supplier: str
    customer: str
    weight: str = Field("1", description="edge weight as a decimal, e.g. transaction share")


class ChainConfig(Strict):
    chain_id: str
    members: list[ChainMemberConfig]
    edges: list[ChainEdgeConfig] = Field(default_factory=list)


class SubQuotaConfig(Strict):
    parent: str
    sme: str
    instrument: str
    qty: int = Field(gt=0)
    revenue_share: str = Field("0.5", description="SME's share of sale proceeds in [0, 1]")
    surplus_rule: Literal["revert", "bank"] = "revert"
    shortfall_rule: Literal["sme", "parent"] = "sme"
    chain_id: str | None = None


class DemoOrderConfig(Strict):
    firm: str
    instrument: str
    segment: str = "main"
    side: Literal["buy", "sell"]
    price: str
    qty: int


class DemoConfig(Strict):
    firms: list[FirmConfig] = Field(default_factory=list)
    chains: list[ChainConfig] = Field(default_factory=list)
    sub_quotas: list[SubQuotaConfig] = Field(default_factory=list)
    orders: list[DemoOrderConfig] = Field(default_factory=list)
    operator_key: str = "operator-demo-key"
    verifier_key: str = "verifier-demo-key"
    verifier_id: str = Field("VERIFIER1", description="the verification body the demo "
                             "verifier key acts as (its credential label)")


class JournalConfig(Strict):
    data_dir: str = "data"
    snapshot_every_commands: int = Field(200_000, gt=0)
    snapshot_every_seconds: float = Field(300.0, gt=0)


class ServerConfig(Strict):
    """The websocket gateway and operator HTTP API (exchange/server)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    rate_limit_per_second: float = Field(
        10000.0, gt=0, description="requests per second per connection (token bucket refill)")
    rate_limit_burst: int = Field(20000, gt=0, description="token bucket size per connection")
    send_queue_max: int = Field(
        10000, gt=0, description="queued outgoing messages per connection before the "
                                 "connection is closed as a slow consumer")
    max_frame_bytes: int = Field(
        262144, gt=0, description="larger frames get FRAME_TOO_LARGE; 4x this closes the socket")
    heartbeat_seconds: float = Field(
        15.0, gt=0, description="websocket ping interval; no pong within half of it closes")
    auth_timeout_seconds: float = Field(10.0, gt=0, description="close if not authenticated")
    idempotency_window: int = Field(
        20000, gt=0, description="(firm, client_order_id) results remembered for retries "
        "(~0.4 KB of memory each, measured)")
    uvloop: bool = Field(True, description="run on uvloop when it is installed")
    max_commands_in_flight: int = Field(
        50000, gt=0, description="place_order/amend_order are refused with OVERLOADED while "
                                 "this many commands are applied but not yet durable (a bound "
                                 "on the backlog's memory)")
    max_journal_lag_ms: float = Field(
        250.0, gt=0, description="place_order/amend_order are refused with OVERLOADED while "
                                 "the oldest command applied but not yet durable has waited "
                                 "this long (a bound on how late acknowledgements get)")
    overload_send_queue: int = Field(
        1000, gt=0, description="place_order/amend_order of a connection are refused with "
                                "OVERLOADED while this many messages wait for its socket")
    book_push_interval_ms: float = Field(
        50.0, ge=0, description="book updates are sent to subscribers in one go at most this "
                                "often (every update, in order; one socket write per "
                                "subscriber per interval); 0 sends each update at once")
    gc_freeze: bool = Field(
        True, description="after start-up (recovery, genesis) move every live object out of "
                          "the cyclic GC's reach (gc.freeze), so collections do not walk them")
    stall_warn_ms: float = Field(
        100.0, ge=0, description="log a warning, with the stack of the code holding it, when "
                                 "the event loop does not turn for this long (every firm "
                                 "waits meanwhile); counted in /metrics; 0 turns it off")
    gc_threshold: tuple[int, int, int] = Field(
        (50000, 20, 100), description="gc.set_threshold for the server process: allocations "
                                      "before a young collection, then the older generations")


class Settings(BaseModel):
    """The whole configuration file. Sections owned by later modules (server, rules,
    compliance) are added here as fields with defaults, so an older file stays valid."""

    model_config = ConfigDict(extra="forbid")
    market: MarketConfig
    demo: DemoConfig = Field(default_factory=DemoConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)  # [rules] (exchange/rules/config.py)
    compliance: ComplianceConfig | None = None  # [compliance] (exchange/compliance/config.py)
    server: ServerConfig = Field(default_factory=ServerConfig)


def load_settings(path: str | Path | None = None) -> Settings:
    p = Path(path) if path is not None else DEFAULT_CONFIG
    with open(p, "rb") as f:
        data = tomllib.load(f)
    return Settings.model_validate(data)
