"""Settings: a TOML file loaded into pydantic models; the shipped files it comes with.

Which settings file: ``--config FILE``, else the file named by ``$CARBON_EXCHANGE_CONFIG``,
else the packaged default (:func:`config_path`). The packaged default and the shipped scenarios
are the repository's ``config/default.toml`` and ``config/scenarios/*.toml``, installed as the
package ``exchange.defaults``; they are read here, through :mod:`importlib.resources`, and
nowhere else, so a wheel, a zip and an editable install behave alike.

Human-facing values (prices in CNY as decimal strings, percentages) are converted to the core's
integers (fen, basis points) by :mod:`exchange.core.units` and nowhere else.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..compliance.config import ComplianceConfig
from ..core.units import parse_price
from ..registry.config import RegistryConfig
from ..rules.config import RulesConfig

DEFAULTS_PACKAGE = "exchange.defaults"
CONFIG_ENV = "CARBON_EXCHANGE_CONFIG"
PACKAGED_DEFAULT = "the packaged default settings (exchange.defaults/default.toml)"


class ConfigError(Exception):
    """A settings file that is missing, not TOML, or not valid settings; the message names it."""


def defaults() -> Traversable:
    """The shipped configuration directory (``config/`` of the repository)."""
    return resources.files(DEFAULTS_PACKAGE)


def default_config_text() -> str:
    """The packaged ``default.toml``, comments and all (what ``init-config`` writes)."""
    return defaults().joinpath("default.toml").read_text(encoding="utf-8")


def shipped_scenarios() -> dict[str, Traversable]:
    """The shipped simulation scenarios by name (``three_sectors`` -> its TOML file)."""
    found = {}
    for f in defaults().joinpath("scenarios").iterdir():
        if f.name.endswith(".toml") and f.is_file():
            found[f.name[: -len(".toml")]] = f
    return dict(sorted(found.items()))


def config_path(explicit: str | os.PathLike | None = None) -> str | None:
    """The operator's settings file: ``explicit`` (``--config``), else ``$CARBON_EXCHANGE_CONFIG``,
    else ``None``, which :func:`load_settings` takes as the packaged default."""
    if explicit:
        return os.fspath(explicit)
    return os.environ.get(CONFIG_ENV) or None


def config_origin(path: str | os.PathLike | None) -> str:
    """Where settings loaded from ``path`` came from, in words for a start-up log."""
    if path is None:
        return PACKAGED_DEFAULT
    how = f" (${CONFIG_ENV})" if os.environ.get(CONFIG_ENV) == os.fspath(path) else ""
    return f"{os.path.abspath(path)}{how}"


def add_config_argument(parser) -> None:
    """``--config FILE`` as every command that reads settings spells it."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"settings file (default: ${CONFIG_ENV} if set, else the packaged default; "
        "`init-config FILE` writes a commented copy to edit)",
    )


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
    reference_price: str = Field("0", description='previous close in CNY, e.g. "85.00"')

    @field_validator("reference_price")
    @classmethod
    def _price(cls, v: str) -> str:
        parse_price(v)
        return v

    @property
    def reference_price_fen(self) -> int:
        return parse_price(self.reference_price)


class CalendarConfig(Strict):
    """Trading sessions (exchange/core/calendar.py): the exchange opens and closes by itself,
    expires DAY orders and rolls the reference price at the day's last close."""

    enabled: bool = Field(
        False,
        description="trade only in sessions; off: the market is open "
        "unless halted and the day ends on POST /end-of-day",
    )
    tz: str = Field("Asia/Shanghai", description="the time zone of the sessions and holidays")
    sessions: list[tuple[str, str]] = Field(
        [("09:30", "11:30"), ("13:00", "15:00")],
        description="[open, close] local times HH:MM, in order, with a break between them",
    )
    weekdays: list[int] = Field([0, 1, 2, 3, 4], description="trading weekdays, 0 = Monday")
    holidays: list[str] = Field([], description="local dates YYYY-MM-DD without trading")
    clock_check_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="the server looks at the wall clock at least this "
        "often; it journals a clock command only when a "
        "session opens or closes",
    )

    @model_validator(mode="after")
    def _valid(self):
        from ..core.calendar import TradingCalendar

        if self.enabled:
            TradingCalendar.build(self.sessions, self.tz, self.weekdays, self.holidays)
        return self

    def calendar(self):
        """The core's calendar, or None when sessions are off."""
        from ..core.calendar import TradingCalendar

        if not self.enabled:
            return None
        return TradingCalendar.build(self.sessions, self.tz, self.weekdays, self.holidays)


class MarketConfig(Strict):
    price_band_bps: int = Field(1000, ge=0, le=10_000, description="+- band around reference")
    segments: list[SegmentConfig]
    instruments: list[InstrumentConfig]
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)


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


class DemoPlatformConfig(Strict):
    """A carbon-inclusive platform of the demo market (exchange/registry)."""

    platform_id: str
    name: str = ""
    api_key: str | None = Field(None, description="demo platform API key (demo market only)")


class DemoRemovalConfig(Strict):
    """A removal project of the demo market, verified for one vintage at genesis."""

    project_id: str
    removal_type: Literal["natural", "engineered"]
    owner: str
    name: str = ""
    vintage: int | None = None
    gross_removal: int = Field(0, ge=0)
    project_emissions: int = Field(0, ge=0)
    baseline_removal: int = Field(0, ge=0)


class DemoConfig(Strict):
    firms: list[FirmConfig] = Field(default_factory=list)
    platforms: list[DemoPlatformConfig] = Field(default_factory=list)
    removal_projects: list[DemoRemovalConfig] = Field(default_factory=list)
    chains: list[ChainConfig] = Field(default_factory=list)
    sub_quotas: list[SubQuotaConfig] = Field(default_factory=list)
    orders: list[DemoOrderConfig] = Field(default_factory=list)
    # no default key: a key everyone knows must be asked for (config/default.toml's demo
    # market does), and even then only a demo start issues it (serve --no-demo issues none)
    operator_key: str | None = None
    verifier_key: str | None = None
    verifier_id: str = Field(
        "VERIFIER1",
        description="the verification body the demo verifier key acts as (its credential label)",
    )


class JournalConfig(Strict):
    data_dir: str = "data"
    url: str = Field(
        "",
        description="journal target: empty for <data_dir>/journal.sqlite, "
        "else sqlite:///abs/path or postgresql://user@host/db",
    )
    schema_name: str = Field(
        "public", alias="schema", description="PostgreSQL schema of the journal's tables"
    )
    checkpoint_key_file: str = Field(
        "",
        description="key for the signed checkpoint of the chain head (keep it away from "
        "the journal); empty: no checkpoint",
    )
    checkpoint_file: str = Field(
        "", description="where the signed checkpoint goes (default <data_dir>/journal.checkpoint)"
    )
    snapshot_every_commands: int = Field(200_000, gt=0)
    snapshot_every_seconds: float = Field(300.0, gt=0)


class ServerConfig(Strict):
    """The websocket gateway and operator HTTP API (exchange/server)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    rate_limit_per_second: float = Field(
        10000.0,
        gt=0,
        description="websocket requests per second per API key, shared by all "
        "its connections (token bucket refill); before auth, per "
        "connection",
    )
    rate_limit_burst: int = Field(
        20000, gt=0, description="token bucket size per API key (before auth: per connection)"
    )
    max_connections_per_key: int = Field(
        64,
        ge=0,
        description="open websocket connections per API key; one more is refused "
        "(TOO_MANY_CONNECTIONS: HTTP 429 on a header auth, close 4029 "
        "on the auth method); 0: no cap",
    )
    max_auth_failures: int = Field(
        5,
        gt=0,
        description="failed authentications on one websocket connection before it is closed (4001)",
    )
    handshake_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="a connection whose first HTTP request head (or websocket "
        "upgrade) is not complete by then is aborted",
    )
    max_connections: int = Field(
        0,
        ge=0,
        description="open TCP connections; past it the oldest one still waiting for "
        "its first request head is aborted, or the new one refused "
        "(503); 0: the descriptor limit (ulimit -n) less 64",
    )
    max_connections_per_ip: int = Field(
        256,
        ge=0,
        description="open TCP connections per client address; one more gets 429 "
        "TOO_MANY_CONNECTIONS; 0: no cap",
    )
    connection_limit_exempt: list[str] = Field(
        ["127.0.0.1", "::1"],
        description="addresses the per-IP limits (connections, HTTP "
        "rate) do not apply to: a local reverse proxy, the "
        "load test",
    )
    http_rate_limit_per_key: float = Field(
        500.0,
        ge=0,
        description="operator API requests per second per API key (429 "
        "RATE_LIMITED with Retry-After past it); 0: no limit",
    )
    http_rate_limit_burst: int = Field(
        1000, gt=0, description="token bucket size per API key (operator API)"
    )
    http_rate_limit_per_ip: float = Field(
        1000.0,
        ge=0,
        description="operator API requests per second per client address "
        "(burst twice that); 0: no limit",
    )
    send_queue_max: int = Field(
        10000,
        gt=0,
        description="queued outgoing messages per connection before the "
        "connection is closed as a slow consumer",
    )
    send_queue_total_max_bytes: int = Field(
        128 << 20,
        gt=0,
        description="bytes waiting for all connections' sockets together "
        "(queued messages + transport buffers of peers that are "
        "behind); past it the connections holding the most are "
        "closed as slow consumers",
    )
    max_frame_bytes: int = Field(
        262144, gt=0, description="larger frames get FRAME_TOO_LARGE; 4x this closes the socket"
    )
    heartbeat_seconds: float = Field(
        15.0, gt=0, description="websocket ping interval; no pong within half of it closes"
    )
    auth_timeout_seconds: float = Field(10.0, gt=0, description="close if not authenticated")
    idempotency_window: int = Field(
        20000,
        gt=0,
        description="(firm, client_order_id) results remembered for retries "
        "(~0.4 KB of memory each, measured)",
    )
    uvloop: bool = Field(True, description="run on uvloop when it is installed")
    max_commands_in_flight: int = Field(
        50000,
        gt=0,
        description="place_order/amend_order are refused with OVERLOADED while "
        "this many commands are applied but not yet durable (a bound "
        "on the backlog's memory)",
    )
    max_journal_lag_ms: float = Field(
        250.0,
        gt=0,
        description="place_order/amend_order are refused with OVERLOADED while "
        "the oldest command applied but not yet durable has waited "
        "this long (a bound on how late acknowledgements get)",
    )
    overload_send_queue: int = Field(
        1000,
        gt=0,
        description="place_order/amend_order of a connection are refused with "
        "OVERLOADED while this many messages wait for its socket",
    )
    book_push_interval_ms: float = Field(
        50.0,
        ge=0,
        description="book updates are sent to subscribers in one go at most this "
        "often (every update, in order; one socket write per "
        "subscriber per interval); 0 sends each update at once",
    )
    gc_freeze: bool = Field(
        True,
        description="after start-up (recovery, genesis) move every live object out of "
        "the cyclic GC's reach (gc.freeze), so collections do not walk them",
    )
    stall_warn_ms: float = Field(
        100.0,
        ge=0,
        description="log a warning, with the stack of the code holding it, when "
        "the event loop does not turn for this long (every firm "
        "waits meanwhile); counted in /metrics; 0 turns it off",
    )
    gc_threshold: tuple[int, int, int] = Field(
        (50000, 20, 100),
        description="gc.set_threshold for the server process: allocations "
        "before a young collection, then the older generations",
    )


class PrivacyConfig(Strict):
    """What the exchange publishes about firms and platforms (exchange/privacy.py)."""

    min_contributors: int = Field(
        3,
        ge=1,
        description="a published aggregate (a statistic per product, sector or action "
        "type) shows a group only when at least this many firms or "
        "platforms contribute to it; fewer: the group is suppressed",
    )


class Settings(BaseModel):
    """The whole configuration file. Sections owned by later modules (server, rules,
    compliance) are added here as fields with defaults, so an older file stays valid."""

    model_config = ConfigDict(extra="forbid")
    market: MarketConfig
    demo: DemoConfig = Field(default_factory=DemoConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)  # [rules] (exchange/rules/config.py)
    compliance: ComplianceConfig | None = None  # [compliance] (exchange/compliance/config.py)
    registry: RegistryConfig | None = None  # [registry] (exchange/registry/config.py)
    server: ServerConfig = Field(default_factory=ServerConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)


def load_settings(path: str | Path | None = None) -> Settings:
    """Settings from ``path``, or the packaged default when it is ``None`` (the environment is
    not consulted here: pass :func:`config_path` of the command line for that)."""
    if path is None:
        where, text = PACKAGED_DEFAULT, default_config_text()
    else:
        where = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"settings file not found: {where} (write one with `init-config FILE`)"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read settings file {where}: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"settings file {where} is not valid TOML: {e}") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"settings file {where} is not valid: {e}") from None
