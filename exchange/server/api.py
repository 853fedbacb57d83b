"""Operator HTTP API (``/api/v1/...``): a route registry, its OpenAPI document, built-in routes.

Adding endpoints from another module
------------------------------------
A rules or compliance package puts its endpoints in ``exchange/<package>/api.py``; the server
imports every such module at start (:func:`load_extensions`), so registering is all it takes::

    from pydantic import BaseModel
    from exchange.server.api import ApiContext, Ident, Ratio, int_param, route

    class FactorBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        firm_id: Ident                                # pattern-checked, and documented so
        factor: Ratio                                 # "0.7": the range is in the pattern

    @route("POST", "/rules/factors", body=FactorBody, summary="Override an allocation factor",
           tag="rules")                               # roles default to ("operator",)
    async def set_factor(ctx: ApiContext, body: FactorBody) -> dict:
        return await ctx.command(SetFactor(firm_id=body.firm_id, ...))

The same ``api.py`` may add websocket methods with :func:`exchange.server.protocol.ws_method`.

* ``path`` is relative to ``/api/v1`` and may hold ``{name}`` parameters. Each is typed by its
  name (:data:`PATH_PARAMS`: ``period`` an integer in [0, 999,999,999], ``application_id`` an
  integer, anything else an identifier), or by ``params={"name": Param}``; a module can type a
  name for every route with :func:`path_param`. ``query={"name": Param}`` declares the query
  parameters (:func:`int_param`, :func:`enum_param`, :func:`ident_param`). Both are checked
  before the handler runs (422 INVALID_PARAMS) and arrive typed in ``ctx.params`` (absent
  query parameters: their default); ``ctx.path`` / ``ctx.query`` keep the text.
* ``roles``: the credential roles allowed (``operator``, ``verifier``, ``firm``); ``None``
  makes the route public. Credentials travel as ``Authorization: Bearer <api key>``.
* ``body``: a pydantic model; the request must carry a JSON object (``{}`` when every field is
  optional), validated against the model (422 INVALID_PARAMS). Use the wire types here
  (``Ident``, ``Text(n)``, ``Percent``, ``Ratio``, ``Ratio100``, ``Magnitude``,
  ``Matching(pattern, ...)``, and ``Price`` / ``Period`` of :mod:`.protocol`): each carries
  the JSON Schema and the check from one pattern, so the document states what is checked.
  A rule the schema cannot state (it depends on the caller, or on the market) is a 400 with a
  stable code, never a 422. ``response``: a model or a JSON Schema of the result (optional);
  ``media_types`` adds e.g. ``text/csv``.
* A handler returns a JSON-able result (status 200, or ``status=`` of the route) or raises
  :class:`~exchange.server.protocol.ProtocolError` / :class:`~exchange.core.errors.Reject`.
  Errors have the websocket's error body: ``{"ok": false, "error": {"code", "message"}}``.
  Every route declares the error statuses its kind can answer (``_error_statuses``: 400, 404,
  429, 503; 401/403 with roles; 413/422 with a body; 422 with parameters; 409 unless GET);
  ``errors={status: "when"}`` adds one. A method the path lacks is 405 with ``Allow``.
* ``ctx.command(cmd)`` submits a command through the journal and returns
  ``{"seq": ..., "events": [...]}`` (the core's events in units for people,
  :func:`exchange.present.present_event`), raising on CommandRejected.
* A result is built in the core's units and leaves through :func:`exchange.present.present`:
  name a field by its unit (``amount_fen``, ``cap_bps``, ``phi_ppm``, ``deadline_ts``) and it
  is written for people (``amount`` "85.40", ``cap_pct`` "5.00", ``phi`` "1.000000",
  ``deadline_at`` ISO-8601); a ``response`` model describes that written form
  (docs/PROTOCOL.md, "Units").

The OpenAPI 3.1 document at ``/api/v1/openapi.json`` is generated from this registry and the
pydantic models (:func:`openapi`): nothing in it is written by hand. tests/
test_openapi_contract.py holds the server to it with schemathesis (docs/PROTOCOL.md 8.1).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

import orjson
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import models_json_schema

from ..core import errors as E
from ..core.commands import (
    AddInstrument,
    CreateSubQuota,
    DepositCash,
    EndOfDay,
    Halt,
    IssueUnits,
    RegisterFirm,
    RegisterSupplyChain,
    Resume,
    SetFirmTrading,
    SetPriceBand,
    TransferUnits,
    WithdrawCash,
)
from ..core.events import CommandRejected, encode_event
from ..core.exchange import AddSegment
from ..core.units import format_price, percent_to_bps, ratio_to_ppm
from ..present import present, present_event
from ..access.credentials import (
    ROLE_FIRM,
    ROLE_OPERATOR,
    ROLE_PLATFORM,
    ROLE_VERIFIER,
    ROLES,
    ROLES_WITH_FIRM,
    IssueApiKey,
    RevokeApiKey,
    new_key,
)
from .appkeys import NODE_KEY
from .gateway import GATEWAY_KEY
from .protocol import (
    INT64_MAX,
    INT64_MIN,
    MAX_PERIOD,
    Period,
    Price,
    ProtocolError,
    validation_message,
    wire_depth,
    wire_order,
    wire_ticker,
)

PREFIX = "/api/v1"

# ====================================================================== wire types
# One source for the document and the checks: each type below carries the JSON Schema the
# OpenAPI document shows and the validator the server runs, built from the same pattern and
# bounds, so a request the document allows is one the server accepts (and the reverse).

IDENT_MAX = 64
IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$"
"""An identifier (firm, instrument, segment, chain, product, key id): 1-64 characters of
ASCII letters, digits and ``. _ : -``, starting with a letter or digit. No spaces, no control
characters, no ``/``: every identifier can stand in a URL path as it is."""

# free text (names, labels, reasons): printable - no C0/C1 control characters, no line or
# paragraph separators. (A lone surrogate never gets this far: the JSON parser refuses it,
# 400 BAD_JSON, and JSON Schema validators cannot compile a surrogate range.)
TEXT_CHARS = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
_IDENT_RE = re.compile(IDENT_PATTERN[1:-1])


def _pattern_check(pattern: str, what: str):
    rx = re.compile(pattern[1:-1] if pattern.startswith("^") and pattern.endswith("$") else pattern)

    def check(v: str) -> str:
        if rx.fullmatch(v) is None:
            raise ValueError(f"expected {what} (pattern {pattern}), got {v[:64]!r}")
        return v

    return check


Ident = Annotated[
    str,
    Field(
        min_length=1,
        max_length=IDENT_MAX,
        json_schema_extra={"pattern": IDENT_PATTERN, "examples": ["CEA-2026"]},
    ),
    AfterValidator(_pattern_check(IDENT_PATTERN, "an identifier")),
]
"""An identifier in a request body (see ``IDENT_PATTERN``)."""

IDENT_KEYS = {"propertyNames": {"minLength": 1, "maxLength": IDENT_MAX, "pattern": IDENT_PATTERN}}
"""``json_schema_extra`` of a ``dict[Ident, ...]`` field: the document states its keys too."""

# JSON Schema's integer is a number with no fraction, so 24.0 is 24: a whole float within
# the range where floats spell integers exactly is taken as the integer (anything past 2**53,
# or with a fraction, stays a float and fails an integer field)
_EXACT_FLOAT_INT = 2**53


def _whole_floats(v):
    t = type(v)
    if t is float:
        return int(v) if v.is_integer() and -_EXACT_FLOAT_INT <= v <= _EXACT_FLOAT_INT else v
    if t is dict:
        return {k: _whole_floats(x) for k, x in v.items()}
    if t is list:
        return [_whole_floats(x) for x in v]
    return v


def Text(max_length: int, *, min_length: int = 0) -> Any:  # noqa: N802 - a type factory
    """Free text of at most ``max_length`` printable characters."""
    pattern = f"^{TEXT_CHARS}*$"
    return Annotated[
        str,
        Field(min_length=min_length, max_length=max_length, json_schema_extra={"pattern": pattern}),
        AfterValidator(_pattern_check(pattern, "text (printable characters)")),
    ]


def Matching(pattern: str, example: str, what: str) -> Any:  # noqa: N802 - a type factory
    """A string of the shape ``pattern`` states (for a decimal: its digits and range, no
    exponent, no sign unless the pattern has one): what it matches, the server parses."""
    return Annotated[
        str,
        Field(json_schema_extra={"pattern": pattern, "examples": [example]}),
        AfterValidator(_pattern_check(pattern, what)),
    ]


# percentages in [0, 100] to the basis point; ratios in [0, 1] and [0, 100] to the ppm
PERCENT_PATTERN = r"^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$"
Percent = Matching(PERCENT_PATTERN, "5", "a percentage in [0, 100], at most two decimals")
RATIO_PATTERN = r"^(1(\.0{1,6})?|0(\.[0-9]{1,6})?)$"
Ratio = Matching(RATIO_PATTERN, "0.7", "a ratio in [0, 1], at most six decimals")
RATIO100_PATTERN = r"^(100(\.0{1,6})?|[0-9]{1,2}(\.[0-9]{1,6})?)$"
Ratio100 = Matching(RATIO100_PATTERN, "1.05", "a number in [0, 100], at most six decimals")
MAGNITUDE_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"
Magnitude = Matching(
    MAGNITUDE_PATTERN, "2.35", "a number in [0, 10^9), at most six decimals (e.g. t CO2e per unit)"
)


@dataclass(frozen=True, slots=True)
class Param:
    """A path or query parameter: the JSON Schema the document shows and the parser the
    server runs on the text (both from the same bounds). ``parse`` raises ValueError."""

    schema: dict
    parse: Callable[[str], Any]
    description: str = ""
    required: bool = False  # query only: a path parameter is always required
    default: Any = None


def int_param(
    lo: int, hi: int, description: str = "", *, required: bool = False, default: int | None = None
) -> Param:
    """A whole number in [lo, hi] written in plain digits (``-`` allowed when lo < 0)."""
    rx = re.compile(r"-?[0-9]{1,19}" if lo < 0 else r"[0-9]{1,19}")

    def parse(text: str) -> int:
        if rx.fullmatch(text) is None or not lo <= int(text) <= hi:
            raise ValueError(f"must be a whole number in [{lo}, {hi}]")
        return int(text)

    schema: dict = {"type": "integer", "minimum": lo, "maximum": hi}
    if default is not None:
        schema["default"] = default
    return Param(schema, parse, description, required, default)


def enum_param(
    values: tuple[str, ...],
    description: str = "",
    *,
    required: bool = False,
    default: str | None = None,
) -> Param:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return text

    schema: dict = {"type": "string", "enum": list(values)}
    if default is not None:
        schema["default"] = default
    return Param(schema, parse, description, required, default)


def ident_param(description: str = "", *, required: bool = False) -> Param:
    def parse(text: str) -> str:
        if _IDENT_RE.fullmatch(text) is None:
            raise ValueError(f"must be an identifier ({IDENT_PATTERN})")
        return text

    return Param(
        {"type": "string", "minLength": 1, "maxLength": IDENT_MAX, "pattern": IDENT_PATTERN},
        parse,
        description,
        required,
    )


PERIOD_PARAM = int_param(0, MAX_PERIOD, "compliance / allocation period, e.g. 2026")

# Path parameters by name: a route's ``{name}`` takes the type registered here (identifiers
# unless listed), so a module that adds routes gets typed, bounded parameters without a word;
# ``route(params=...)`` overrides per route, :func:`path_param` adds a name for everyone.
PATH_PARAMS: dict[str, Param] = {
    "period": PERIOD_PARAM,
    "application_id": int_param(0, INT64_MAX, "grant application id"),
}


def path_param(name: str, param: Param) -> None:
    """Type the path parameter ``{name}`` of every route that has it."""
    PATH_PARAMS[name] = param


@dataclass(slots=True)
class Route:
    method: str
    path: str
    handler: Callable
    summary: str
    body: type[BaseModel] | None
    response: Any
    roles: tuple[str, ...] | None
    tag: str
    status: int
    description: str
    params: dict[str, Param]  # path parameters, in path order
    query: dict[str, Param]
    errors: dict[int, str]  # status -> when: every error status the route can answer
    media_types: tuple[str, ...]


ROUTES: list[Route] = []

# What each error status means; a route declares those it can answer (see _error_statuses).
ERROR_STATUSES = {
    400: "malformed JSON, or a well-formed request the exchange's rules refuse (the code says "
    "which rule: INSUFFICIENT_FUNDS, OFFSET_CAP_EXCEEDED, ...)",
    401: "missing, unknown or revoked API key",
    403: "the key's role (or firm) may not do this",
    404: "no such resource (firm, instrument, book, key, period, ...)",
    409: "already exists (DUPLICATE_*)",
    413: "body over 1 MiB",
    422: "INVALID_PARAMS: the request does not match this document (parameters, body)",
    429: "RATE_LIMITED: over the request rate limit; retry later",
    503: "SHUTTING_DOWN / OVERLOADED: not applied; retry later",
}


def _error_statuses(method: str, params, query, body, roles) -> dict[int, str]:
    codes = {400, 404, 429, 503}
    if roles is not None:
        codes |= {401, 403}
    if body is not None:
        codes |= {413, 422}
    if params or query:
        codes.add(422)
    if method != "GET":
        codes.add(409)
    return {c: ERROR_STATUSES[c] for c in sorted(codes)}


def route(
    method: str,
    path: str,
    *,
    summary: str,
    body: type[BaseModel] | None = None,
    response: Any = None,
    roles: tuple[str, ...] | None = (ROLE_OPERATOR,),
    tag: str = "operator",
    status: int = 200,
    params: dict[str, Param] | None = None,
    query: dict[str, Param] | None = None,
    errors: dict[int, str] | None = None,
    media_types: tuple[str, ...] = ("application/json",),
):
    """Register ``handler(ctx, body) -> result`` for ``METHOD /api/v1<path>``.

    Path parameters are typed by name (:data:`PATH_PARAMS`, identifiers by default) or by
    ``params``; ``query`` declares the query parameters. Both are checked before the handler
    runs (422) and their typed values are in ``ctx.params``. ``errors`` adds error statuses to
    the ones every route of its kind declares (``_error_statuses``)."""
    method = method.upper()
    names = re.findall(r"{(\w+)}", path)
    given = params or {}
    typed = {n: given.get(n) or PATH_PARAMS.get(n) or ident_param() for n in names}
    query = dict(query or {})
    declared = _error_statuses(method, typed, query, body, roles)
    for code, when in (errors or {}).items():
        declared[code] = when
    declared = dict(sorted(declared.items()))

    def deco(fn):
        for r in ROUTES:
            if r.method == method and r.path == path:
                if r.handler is fn:
                    return fn
                raise RuntimeError(f"route {method} {path} registered twice")
        ROUTES.append(
            Route(
                method,
                path,
                fn,
                summary,
                body,
                response,
                roles,
                tag,
                status,
                (fn.__doc__ or "").strip(),
                typed,
                query,
                declared,
                media_types,
            )
        )
        return fn

    return deco


class ApiContext:
    """What a route handler gets: the exchange (read side), the gateway, the caller, and the
    checked path and query parameters (``params``: typed; ``path``, ``query``: their text)."""

    __slots__ = ("request", "gateway", "ex", "cred", "path", "query", "params")

    def __init__(self, request, gateway, cred, params: dict | None = None):
        self.request = request
        self.gateway = gateway
        self.ex = gateway.ex
        self.cred = cred
        self.path = request.match_info
        self.query = request.query
        self.params = params or {}

    async def submit(self, cmd) -> list:
        return await self.gateway.submit(cmd)

    async def command(self, cmd) -> dict:
        check_command_ints(cmd)
        seq, events = await self.gateway.submit_seq(cmd)
        for ev in events:
            if type(ev) is CommandRejected:
                raise ProtocolError(ev.code, ev.message, 400)
        return {"seq": seq, "events": [present_event(encode_event(ev)) for ev in events]}


def _bad_int(v, path: str) -> str | None:
    """The path of the first int outside the 64-bit signed range in a JSON value, or None."""
    t = type(v)
    if t is int:
        return path if not INT64_MIN <= v <= INT64_MAX else None
    if t is dict:
        for k, x in v.items():
            if (bad := _bad_int(x, f"{path}.{k}" if path else str(k))) is not None:
                return bad
    elif t is list or t is tuple:
        for i, x in enumerate(v):
            if (bad := _bad_int(x, f"{path}.{i}" if path else str(i))) is not None:
                return bad
    return None


def check_command_ints(cmd) -> None:
    """The last line before the journal: a command whose integers do not fit in 64 bits can
    not be journaled, and a journal write that fails stops the runner (/readyz 503 for good).
    Field-level bounds should refuse such values first; this catches what a route forgot."""
    for name in cmd._FIELDS:
        bad = _bad_int(getattr(cmd, name), name)
        if bad is not None:
            raise ProtocolError(E.INVALID_PARAMS, f"{bad}: out of range (64-bit integer)", 422)


def error_response(
    code: str, message: str, status: int, headers: dict | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps({"ok": False, "error": {"code": code, "message": message}}),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _json(result, status: int = 200) -> web.Response:
    """Every JSON result leaves in units for people (exchange/present.py: ``*_fen`` as CNY
    strings, ``*_bps`` as ``*_pct``, ``*_ppm`` as decimals, ``*_ts`` as ISO-8601 ``*_at``)."""
    return web.Response(
        body=orjson.dumps(present(result)), status=status, content_type="application/json"
    )


_REJECT_STATUS = {
    E.UNKNOWN_ACCOUNT: 404,
    E.UNKNOWN_INSTRUMENT: 404,
    E.UNKNOWN_KEY: 404,
    E.UNKNOWN_SEGMENT: 404,
    E.UNKNOWN_CHAIN: 404,
    E.NOT_FOUND: 404,
    E.DUPLICATE_ACCOUNT: 409,
    E.DUPLICATE_INSTRUMENT: 409,
    E.DUPLICATE_KEY: 409,
    E.DUPLICATE_CHAIN: 409,
    E.SHUTTING_DOWN: 503,
}

METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"


def _check_params(r: Route, request: web.Request) -> dict:
    """The route's path and query parameters, parsed; ProtocolError 422 naming the first bad
    one."""
    out = {}
    for name, p in r.params.items():
        try:
            out[name] = p.parse(request.match_info[name])
        except ValueError as exc:
            raise ProtocolError(E.INVALID_PARAMS, f"{name}: {exc}", 422) from None
    q = request.query
    for name, p in r.query.items():
        if name not in q:
            if p.required:
                raise ProtocolError(E.INVALID_PARAMS, f"{name}: required", 422)
            out[name] = p.default
            continue
        if len(q.getall(name)) > 1:
            raise ProtocolError(E.INVALID_PARAMS, f"{name}: given more than once", 422)
        try:
            out[name] = p.parse(q[name])
        except ValueError as exc:
            raise ProtocolError(E.INVALID_PARAMS, f"{name}: {exc}", 422) from None
    return out


def _make_handler(r: Route):
    roles = r.roles
    body_model = r.body

    async def handler(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY_KEY]
        cred = None
        if roles is not None:
            auth = request.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            cred = gw.credentials.lookup(token.strip()) if scheme.lower() == "bearer" else None
            if cred is None:
                return error_response(
                    E.AUTH_FAILED,
                    "missing, unknown or revoked API key (Authorization: Bearer <key>)",
                    401,
                )
            if cred.role not in roles:
                return error_response(E.FORBIDDEN, f"needs role {' or '.join(roles)}", 403)
        try:
            params = _check_params(r, request)
        except ProtocolError as exc:
            return error_response(exc.code, exc.message, exc.status)
        body = None
        if body_model is not None:
            # a route with a body model requires a JSON object, "{}" when every field is
            # optional: a bare POST (a stray retry, a probe) never halts a market
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return error_response(E.INVALID_PARAMS, "body over 1 MiB", 413)
            if not raw.strip():
                return error_response(
                    E.INVALID_PARAMS,
                    "a JSON object body is required ({} when no field is needed)",
                    422,
                )
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return error_response(E.BAD_JSON, "body is not valid JSON", 400)
            data = _whole_floats(data)
            bad = _bad_int(data, "")
            if bad is not None:
                return error_response(
                    E.INVALID_PARAMS, f"{bad or 'body'}: out of range (64-bit integer)", 422
                )
            try:
                body = body_model.model_validate(data)
            except ValidationError as exc:
                return error_response(E.INVALID_PARAMS, validation_message(exc), 422)
            except (TypeError, ValueError) as exc:
                return error_response(E.INVALID_PARAMS, str(exc)[:200], 422)
        try:
            result = await r.handler(ApiContext(request, gw, cred, params), body)
        except ProtocolError as exc:
            status = exc.status if exc.status != 400 else _REJECT_STATUS.get(exc.code, 400)
            return error_response(exc.code, exc.message, status)
        except E.Reject as exc:
            return error_response(exc.code, exc.message, _REJECT_STATUS.get(exc.code, 400))
        if isinstance(result, web.StreamResponse):  # compliance: CSV statements as-is
            return result
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        return _json(result, r.status)

    return handler


@web.middleware
async def api_errors(request: web.Request, handler):
    """Unknown ``/api/`` paths get the JSON error body too (404), and a method the path does
    not have 405 with the ``Allow`` header listing those it has (RFC 9110)."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        if not request.path.startswith("/api/"):
            raise
        allowed = sorted(exc.allowed_methods)
        return error_response(
            METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.path} (allowed: {', '.join(allowed)})",
            405,
            headers={"Allow": ", ".join(allowed)},
        )
    except web.HTTPNotFound:
        if not request.path.startswith("/api/"):
            raise
        return error_response(E.NOT_FOUND, f"no such endpoint {request.path}", 404)


def add_routes(app: web.Application) -> None:
    for r in ROUTES:
        app.router.add_route(r.method, PREFIX + r.path, _make_handler(r))
    app.router.add_get(PREFIX + "/openapi.json", _openapi_handler, allow_head=False)


_OPENAPI_CACHE: dict[int, bytes] = {}


async def _openapi_handler(request: web.Request) -> web.Response:
    doc = _OPENAPI_CACHE.get(len(ROUTES))
    if doc is None:
        doc = _OPENAPI_CACHE[len(ROUTES)] = orjson.dumps(openapi())
    return web.Response(body=doc, content_type="application/json")


def load_extensions() -> list[str]:
    """Import ``exchange.<package>.api`` for every package that has one (and the gateway's
    ``protocol``), so their routes and websocket methods register. Returns the names."""
    import exchange

    loaded = []
    for info in pkgutil.iter_modules(exchange.__path__):
        if not info.ispkg or info.name == "server":
            continue
        name = f"exchange.{info.name}.api"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        loaded.append(name)
    return loaded


# ====================================================================== OpenAPI


class ErrorDetail(BaseModel):
    code: str = Field(description="stable error code (docs/PROTOCOL.md)")
    message: str


class ErrorBody(BaseModel):
    ok: Literal[False] = False
    error: ErrorDetail


class CommandResult(BaseModel):
    seq: int = Field(description="sequence number the command got in the journal")
    events: list[dict[str, Any]] = Field(
        description="the core's events in units for people "
        "(CNY strings, tonnes, percent, ISO-8601 "
        'times; docs/PROTOCOL.md "Units")'
    )


def _param_doc(name: str, where: str, p: Param) -> dict:
    d = {"name": name, "in": where, "required": where == "path" or p.required, "schema": p.schema}
    if p.description:
        d["description"] = p.description
    return d


def _int64_bounds(schema) -> None:
    """Every integer of a body is checked against the 64-bit range at the boundary (_bad_int),
    whatever its model says: the document states that bound where the model states none."""
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            schema.setdefault("minimum", INT64_MIN)
            schema.setdefault("maximum", INT64_MAX)
        for v in schema.values():
            _int64_bounds(v)
    elif isinstance(schema, list):
        for v in schema:
            _int64_bounds(v)


def openapi() -> dict:
    """The OpenAPI 3.1 document of every registered route."""
    models: list = [ErrorBody]
    for r in ROUTES:
        for m in (r.body, r.response):
            if isinstance(m, type) and issubclass(m, BaseModel) and m not in models:
                models.append(m)
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas = top.get("$defs", {})
    _int64_bounds(schemas)

    def ref(m):
        if m is None:
            return {"type": "object"}
        if isinstance(m, type) and issubclass(m, BaseModel):
            return {"$ref": f"#/components/schemas/{m.__name__}"}
        if isinstance(m, dict):
            return m
        return {"type": "object"}

    paths: dict = {}
    for r in ROUTES:
        slug = re.sub(r"[^a-z0-9]+", "_", r.path.lower()).strip("_")
        op: dict = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": f"{r.method.lower()}_{slug}",
        }
        if r.description:
            op["description"] = r.description
        params = [_param_doc(n, "path", p) for n, p in r.params.items()]
        params += [_param_doc(n, "query", p) for n, p in r.query.items()]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(r.body)}},
            }
        ok = {"description": "OK", "content": {}}
        for mt in r.media_types:
            ok["content"][mt] = {
                "schema": ref(r.response) if mt == "application/json" else {"type": "string"}
            }
        op["responses"] = {str(r.status): ok}
        for code, when in r.errors.items():
            op["responses"][str(code)] = {
                "description": when,
                "content": {"application/json": {"schema": ref(ErrorBody)}},
            }
        if r.roles is not None:
            op["security"] = [{"apiKey": []}]
            op["x-roles"] = list(r.roles)
        paths.setdefault(PREFIX + r.path, {})[r.method.lower()] = op
    paths[PREFIX + "/openapi.json"] = {
        "get": {
            "summary": "This document",
            "tags": ["meta"],
            "operationId": "get_openapi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **{
                    str(c): {
                        "description": ERROR_STATUSES[c],
                        "content": {"application/json": {"schema": ref(ErrorBody)}},
                    }
                    for c in (429, 503)
                },
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Carbon allowance exchange: operator API",
            "version": "1",
            "description": 'Prices and cash travel as decimal CNY strings ("85.50"); '
            'quantities as whole tonnes; rates as percent strings ("5.00"), '
            "ratios as decimal strings, times as ISO-8601 with offset. "
            "Every error has the body ErrorBody. "
            "See docs/PROTOCOL.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "API key; roles: " + ", ".join(ROLES),
                }
            },
        },
    }


# ====================================================================== request bodies


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterFirmBody(Body):
    firm_id: Ident
    name: Text(128) = ""
    sector: Text(64) = ""
    product: Text(64) = ""
    size_class: Literal["large", "sme"] = "large"
    stp_policy: Literal["cancel_resting", "cancel_incoming", "cancel_both"] = "cancel_resting"
    can_trade: StrictBool = True


class FirmTradingBody(Body):
    can_trade: StrictBool


class IssueKeyBody(Body):
    # firm_id goes with roles firm and platform and only with them: the document says so with
    # if/then/else, the validator below checks the same, so a generated client sees the rule
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"role": {"enum": list(ROLES_WITH_FIRM)}}, "required": ["role"]},
            "then": {"required": ["firm_id"], "properties": {"firm_id": {"type": "string"}}},
            "else": {"properties": {"firm_id": {"type": "null"}}},
        },
    )

    role: Literal["firm", "operator", "verifier", "platform"]
    firm_id: Ident | None = Field(
        None,
        description="the firm a firm key trades for, or the "
        "carbon-inclusive platform a platform key "
        "acts for: required for those roles, null "
        "(absent) otherwise",
    )
    label: Text(128) = Field(
        "", description="free text; a verifier key's label is the verifier id it acts as"
    )

    @model_validator(mode="after")
    def _firm_id_with_role(self):
        if (self.role in ROLES_WITH_FIRM) != (self.firm_id is not None):
            raise ValueError("firm_id is required for roles firm and platform and only for them")
        return self


class IssuedKey(BaseModel):
    key_id: str
    api_key: str = Field(description="shown once: only its SHA-256 hash is stored")
    role: str
    firm_id: str | None
    seq: int


class KeyInfo(BaseModel):
    key_id: str
    role: str
    firm_id: str | None
    label: str
    issued_seq: int
    revoked: bool


class AddInstrumentBody(Body):
    symbol: Ident
    kind: Literal["allowance", "offset"] = "allowance"
    vintage: Period = 0
    offset_type: Ident | None = None
    reference_price: Price = Field("0", description="previous close, CNY")


class AddSegmentBody(Body):
    name: Ident
    tick: Price | None = Field(None, description='price step, CNY (default "0.01")')
    lot: StrictInt = Field(1, gt=0, description="tonnes")
    max_order_qty: StrictInt = Field(99_999, gt=0)
    fee_pct: Percent = Field("0", description='fee per side, % of notional, e.g. "0.05"')
    access: Literal["all", "sme_sell_any_buy", "sme_only", "members"] = "all"


class CashBody(Body):
    account: Ident
    amount: Price = Field(description="CNY, decimal string")


class IssueUnitsBody(Body):
    account: Ident
    instrument: Ident
    qty: StrictInt = Field(gt=0, le=INT64_MAX)
    source: Text(64) = "allocation"
    ref: Text(64) = ""


class TransferBody(Body):
    from_account: Ident
    to_account: Ident
    instrument: Ident
    qty: StrictInt = Field(gt=0, le=INT64_MAX)


class BandBody(Body):
    band_pct: Percent | None = Field(
        None, description='half-width, % of the reference price, e.g. "10"'
    )
    reference_price: Price | None = None


class ScopeBody(Body):
    instrument: Ident | None = Field(None, description="default: every instrument")
    segment: Ident | None = Field(None, description="default: every segment")


class EmptyBody(Body):
    pass


class ChainMember(Body):
    firm: Ident
    tier: StrictInt = Field(ge=0, le=1_000)


class ChainEdge(Body):
    supplier: Ident
    customer: Ident
    weight: Magnitude = Field(description='the edge\'s weight, e.g. "0.6" (six decimals)')


class SupplyChainBody(Body):
    chain_id: Ident
    members: list[ChainMember]
    edges: list[ChainEdge] = Field(default_factory=list)


class SubQuotaBody(Body):
    parent: Ident
    sme: Ident
    instrument: Ident
    qty: StrictInt = Field(gt=0, le=INT64_MAX)
    revenue_share: Ratio = Field(description='the SME\'s share of the proceeds, e.g. "0.3"')
    surplus_rule: Literal["revert", "bank"] = "revert"
    shortfall_rule: Literal["sme", "parent"] = "sme"
    chain_id: Ident | None = None


class StateInfo(BaseModel):
    last_seq: int
    state_hash: str
    day: int
    journal_lag: int


# ====================================================================== built-in routes


def _firm_info(a) -> dict:
    return {
        "firm_id": a.firm_id,
        "name": a.name,
        "sector": a.sector,
        "product": a.product,
        "size_class": a.size_class,
        "can_trade": a.can_trade,
        "chains": dict(sorted(a.chains.items())),
    }


@route("GET", "/firms", summary="List firms", tag="firms")
async def list_firms(ctx: ApiContext, body) -> dict:
    return {"firms": [_firm_info(a) for _, a in sorted(ctx.ex.accounts.items()) if not a.system]}


@route(
    "POST",
    "/firms",
    summary="Register a firm",
    body=RegisterFirmBody,
    response=CommandResult,
    tag="firms",
)
async def register_firm(ctx: ApiContext, b: RegisterFirmBody) -> dict:
    return await ctx.command(RegisterFirm(**b.model_dump()))


@route(
    "GET",
    "/firms/{firm_id}",
    summary="A firm with balances and live orders",
    tag="firms",
    roles=(ROLE_OPERATOR, ROLE_VERIFIER, ROLE_FIRM),
)
async def get_firm(ctx: ApiContext, body) -> dict:
    """For the firm itself, its verifier and operators (exchange/privacy.py)."""
    from ..privacy import require_firm_reader
    from .protocol import wire_balances

    require_firm_reader(ctx, ctx.path["firm_id"])
    a = ctx.ex.accounts.get(ctx.path["firm_id"])
    if a is None or a.system:
        raise ProtocolError(E.UNKNOWN_ACCOUNT, "no such firm", 404)
    out = _firm_info(a)
    out["balances"] = wire_balances(ctx.ex, a.firm_id)
    out["open_orders"] = [wire_order(o) for o in ctx.ex.open_orders(a.firm_id)]
    return out


@route(
    "POST",
    "/firms/{firm_id}/trading",
    summary="Allow or stop a firm's trading",
    body=FirmTradingBody,
    response=CommandResult,
    tag="firms",
)
async def firm_trading(ctx: ApiContext, b: FirmTradingBody) -> dict:
    return await ctx.command(SetFirmTrading(firm_id=ctx.path["firm_id"], can_trade=b.can_trade))


@route(
    "GET",
    "/api-keys",
    summary="List API keys, revoked ones too (never the keys)",
    tag="keys",
    response={
        "type": "object",
        "properties": {
            "keys": {"type": "array", "items": {"$ref": "#/components/schemas/KeyInfo"}}
        },
    },
)
async def list_keys(ctx: ApiContext, body) -> dict:
    creds = ctx.gateway.credentials
    return {"keys": [c.public() for _, c in sorted(creds.keys.items())]}


@route(
    "POST",
    "/api-keys",
    summary="Issue an API key (returned once; stored hashed)",
    body=IssueKeyBody,
    response=IssuedKey,
    tag="keys",
    status=201,
)
async def issue_key(ctx: ApiContext, b: IssueKeyBody) -> dict:
    """A firm key needs a registered firm, a platform key a registered carbon-inclusive
    platform (404 UNKNOWN_ACCOUNT / UNKNOWN_PLATFORM otherwise)."""
    if b.role in ROLES_WITH_FIRM:
        a = ctx.ex.accounts.get(b.firm_id)
        if a is None or a.system:
            raise ProtocolError(E.UNKNOWN_ACCOUNT, f"no firm {b.firm_id!r}", 404)
    if b.role == ROLE_PLATFORM:
        reg = ctx.ex.modules.get("registry")
        if reg is None or b.firm_id not in reg.platforms:
            raise ProtocolError(
                E.UNKNOWN_PLATFORM,
                f"{b.firm_id!r} is not a registered carbon-inclusive platform",
                404,
            )
    key = new_key()
    h, scheme = ctx.gateway.credentials.digest(key)  # keyed under the server secret
    key_id = "k-" + new_key()[:16]
    cmd = IssueApiKey(
        key_id=key_id,
        role=b.role,
        key_hash=h,
        firm_id=b.firm_id if b.role in ROLES_WITH_FIRM else None,
        label=b.label,
        scheme=scheme,
    )
    done = await ctx.command(cmd)
    return {
        "key_id": key_id,
        "api_key": key,
        "role": b.role,
        "firm_id": cmd.firm_id,
        "seq": done["seq"],
    }


@route(
    "DELETE",
    "/api-keys/{key_id}",
    summary="Revoke an API key (its sessions are closed)",
    response=CommandResult,
    tag="keys",
)
async def revoke_key(ctx: ApiContext, body) -> dict:
    """After it, ``GET /api-keys/{key_id}`` and a second ``DELETE`` answer 404 UNKNOWN_KEY;
    the revoked record stays in ``GET /api-keys`` (``revoked: true``) and in the journal."""
    return await ctx.command(RevokeApiKey(key_id=ctx.path["key_id"]))


@route(
    "GET", "/api-keys/{key_id}", summary="One active API key's record", response=KeyInfo, tag="keys"
)
async def get_key(ctx: ApiContext, body) -> dict:
    """404 UNKNOWN_KEY for a key never issued or revoked (see ``GET /api-keys`` for the
    revoked ones)."""
    c = ctx.gateway.credentials.keys.get(ctx.path["key_id"])
    if c is None or not c.active:
        raise ProtocolError(E.UNKNOWN_KEY, "no active key with that id", 404)
    return c.public()


@route(
    "GET", "/instruments", summary="Instruments with their day statistics", tag="market", roles=None
)
async def list_instruments(ctx: ApiContext, body) -> dict:
    ex = ctx.ex
    out = []
    for sym, ins in sorted(ex.instruments.items()):
        t = wire_ticker(ex, sym)
        t.update(
            {
                "kind": ins.kind,
                "vintage": ins.vintage,
                "offset_type": ins.offset_type,
                "band_bps": ins.band_bps,
                "segments": sorted(seg for (s, seg) in ex.books if s == sym),
            }
        )
        out.append(t)
    return {"instruments": out}


@route(
    "POST",
    "/instruments",
    summary="Add an instrument",
    body=AddInstrumentBody,
    response=CommandResult,
    tag="market",
)
async def add_instrument(ctx: ApiContext, b: AddInstrumentBody) -> dict:
    return await ctx.command(AddInstrument(**b.model_dump()))


@route("GET", "/segments", summary="Segments and their rules", tag="market", roles=None)
async def list_segments(ctx: ApiContext, body) -> dict:
    return {
        "segments": [
            {
                "name": s.name,
                "tick": format_price(s.tick),
                "lot": s.lot,
                "max_order_qty": s.max_order_qty,
                "fee_bps": s.fee_bps,
                "access": s.access,
            }
            for _, s in sorted(ctx.ex.segments.items())
        ]
    }


@route(
    "POST",
    "/segments",
    summary="Add or change a segment's rules",
    body=AddSegmentBody,
    response=CommandResult,
    tag="market",
)
async def add_segment(ctx: ApiContext, b: AddSegmentBody) -> dict:
    d = b.model_dump()
    d["fee_bps"] = percent_to_bps(d.pop("fee_pct"))
    d["tick"] = 1 if d["tick"] is None else d["tick"]  # fen: 0.01 CNY
    return await ctx.command(AddSegment(**d))


@route(
    "PUT",
    "/instruments/{symbol}/band",
    summary="Set the price band and/or reference price",
    body=BandBody,
    response=CommandResult,
    tag="market",
)
async def set_band(ctx: ApiContext, b: BandBody) -> dict:
    band = None if b.band_pct is None else percent_to_bps(b.band_pct)
    return await ctx.command(
        SetPriceBand(
            instrument=ctx.path["symbol"], band_bps=band, reference_price=b.reference_price
        )
    )


@route(
    "POST",
    "/halt",
    summary="Halt the market, an instrument or one book",
    body=ScopeBody,
    response=CommandResult,
    tag="market",
)
async def halt(ctx: ApiContext, b: ScopeBody) -> dict:
    return await ctx.command(Halt(instrument=b.instrument, segment=b.segment))


@route(
    "POST",
    "/resume",
    summary="Resume trading",
    body=ScopeBody,
    response=CommandResult,
    tag="market",
)
async def resume(ctx: ApiContext, b: ScopeBody) -> dict:
    return await ctx.command(Resume(instrument=b.instrument, segment=b.segment))


@route(
    "POST",
    "/end-of-day",
    summary="Close the trading day",
    body=EmptyBody,
    response=CommandResult,
    tag="market",
)
async def end_of_day(ctx: ApiContext, b) -> dict:
    return await ctx.command(EndOfDay())


@route(
    "POST",
    "/deposits",
    summary="Deposit cash into a firm's account",
    body=CashBody,
    response=CommandResult,
    tag="ledger",
)
async def deposit(ctx: ApiContext, b: CashBody) -> dict:
    return await ctx.command(DepositCash(account=b.account, amount=b.amount))


@route(
    "POST",
    "/withdrawals",
    summary="Withdraw free cash from a firm's account",
    body=CashBody,
    response=CommandResult,
    tag="ledger",
)
async def withdraw(ctx: ApiContext, b: CashBody) -> dict:
    return await ctx.command(WithdrawCash(account=b.account, amount=b.amount))


@route(
    "POST",
    "/issuance",
    summary="Issue allowances or offset credits",
    body=IssueUnitsBody,
    response=CommandResult,
    tag="ledger",
)
async def issue_units(ctx: ApiContext, b: IssueUnitsBody) -> dict:
    return await ctx.command(IssueUnits(**b.model_dump()))


@route(
    "POST",
    "/transfers",
    summary="Transfer units between firms",
    body=TransferBody,
    response=CommandResult,
    tag="ledger",
)
async def transfer(ctx: ApiContext, b: TransferBody) -> dict:
    return await ctx.command(TransferUnits(**b.model_dump()))


@route(
    "POST",
    "/supply-chains",
    summary="Register a supply chain",
    body=SupplyChainBody,
    response=CommandResult,
    tag="firms",
)
async def supply_chain(ctx: ApiContext, b: SupplyChainBody) -> dict:
    return await ctx.command(
        RegisterSupplyChain(
            chain_id=b.chain_id,
            members=tuple((m.firm, m.tier) for m in b.members),
            edges=tuple((e.supplier, e.customer, ratio_to_ppm(e.weight)) for e in b.edges),
        )
    )


@route(
    "POST",
    "/sub-quotas",
    summary="Split a sub-quota to an SME",
    body=SubQuotaBody,
    response=CommandResult,
    tag="firms",
)
async def sub_quota(ctx: ApiContext, b: SubQuotaBody) -> dict:
    d = b.model_dump()
    d["revenue_share_ppm"] = ratio_to_ppm(d.pop("revenue_share"))
    return await ctx.command(CreateSubQuota(**d))


@route(
    "GET",
    "/books/{instrument}/{segment}",
    summary="Full-depth L2 book",
    tag="market",
    roles=(ROLE_OPERATOR, ROLE_VERIFIER, ROLE_FIRM),
)
async def get_book(ctx: ApiContext, body) -> dict:
    book = ctx.ex.books.get((ctx.path["instrument"], ctx.path["segment"]))
    if book is None:
        raise ProtocolError(E.UNKNOWN_SEGMENT, "no such book", 404)
    return wire_depth(book)


class LeaderInfo(BaseModel):
    node_id: str
    address: str = Field(description="the leader's websocket URL, as its lease names it")
    revision: int = Field(description="the lease's revision in its key-value bucket")
    renewed_s_ago: float | None = Field(description="seconds since the leader last renewed")


class NodeInfo(BaseModel):
    node_id: str
    journal: Literal["sqlite", "postgresql", "nats", "memory"]
    role: Literal["single", "leader", "stepping_down"] = Field(
        description="single: the only writer of its journal; leader: holds the lease; "
        "stepping_down: its lease is lost or held by another node"
    )
    leader: LeaderInfo | None = Field(description="the lease's holder now (None: no lease)")
    lease_ttl_s: float | None = None
    lease_readable: bool | None = Field(
        None, description="false while the lease bucket does not answer (a NATS election)"
    )


@route(
    "GET",
    "/node",
    summary="This node's role, and which node leads",
    response=NodeInfo,
    tag="meta",
    roles=None,
)
async def node_info(ctx: ApiContext, body) -> dict:
    return await ctx.request.app[NODE_KEY].describe()


@route(
    "GET",
    "/state",
    summary="Sequence number and state hash",
    response=StateInfo,
    tag="meta",
    roles=(ROLE_OPERATOR, ROLE_VERIFIER),
)
async def state(ctx: ApiContext, body) -> dict:
    ex = ctx.ex
    return {
        "last_seq": ex.last_seq,
        "state_hash": ex.state_hash(),
        "day": ex.day,
        "journal_lag": int(getattr(ctx.gateway.runner, "journal_lag", 0) or 0),
    }
