"""Websocket framing: the frames the gateway writes and how it reads them.

Out: every message becomes a final, unmasked, uncompressed text frame built here
(:data:`_FRAME_HEAD`, one header per payload length), pushes on a sequenced channel share a
prebuilt head (:data:`_HEADS`), error replies are :func:`_err_bytes`. In: aiohttp's frame
parser hands each text message straight to the session (:class:`_DirectQueue`,
:class:`_DirectWS`), without a message object or a task wake-up per message.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from ..core import errors as E

if TYPE_CHECKING:
    from .gateway import Session

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
_dumps = orjson.dumps

# ---------------------------------------------------------------- aiohttp's internals
# The direct text-frame path (_DirectQueue, _DirectWS) is the server's one use of aiohttp's
# private API: its frame parser and message queue, and WebSocketResponse._post_start with the
# attributes it sets. It is worth it (a message object, a task wake-up and a receive() per
# request saved: docs/adr/0003-gateway.md), so it is kept, confined to this section and
# checked by aiohttp_direct_problem(); where that finds something changed, every connection
# takes aiohttp's public path (WebSocketResponse with its own heartbeat, ``async for``) and
# tests/test_aiohttp_internals.py fails naming the aiohttp version.
try:
    from aiohttp._websocket.reader import WebSocketDataQueue
    from aiohttp._websocket.reader import WebSocketReader as _DirectReader
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE as _CHUNK
except ImportError:  # pragma: no cover - an aiohttp without them: the public path
    WebSocketDataQueue = object
    _DirectReader = None
    _CHUNK = 0

# text frames as bytes: orjson parses UTF-8 bytes directly (no str decode first); a public
# argument of WebSocketResponse since aiohttp 3.11
_WS_KW = (
    {"decode_text": False}
    if "decode_text" in inspect.signature(web.WebSocketResponse.__init__).parameters
    else {}
)

# what _DirectWS._post_start sets or reads on the response, as aiohttp's own _post_start does
_WS_ATTRS = (
    "_ws_protocol",
    "_writer",
    "_reader",
    "_parser",
    "_loop",
    "_max_msg_size",
    "_compress",
    "_decode_text",
    "_heartbeat",
)


def aiohttp_direct_problem() -> str | None:
    """None when the installed aiohttp has the internals the direct path was written against;
    else what is missing or changed, naming the aiohttp version (the path is then off)."""
    try:
        why = _direct_problems()
    except Exception as e:  # a probe itself failed: as changed, never a failed import
        why = [f"probing its internals raised {e!r}"]
    if not why:
        return None
    return (
        f"aiohttp {aiohttp.__version__}: {'; '.join(why)} - the gateway's direct "
        f"text-frame path (exchange/server/framing.py) is off and every connection takes "
        f"aiohttp's public path; update the path to this aiohttp"
    )


def _direct_problems() -> list[str]:
    why = []
    if _DirectReader is None or WebSocketDataQueue is object:
        why.append("aiohttp._websocket.reader has no WebSocketReader/WebSocketDataQueue")
    elif not callable(getattr(WebSocketDataQueue, "feed_data", None)):
        why.append("WebSocketDataQueue.feed_data is gone")
    post = getattr(web.WebSocketResponse, "_post_start", None)
    if post is None:
        why.append("WebSocketResponse._post_start is gone")
    elif list(inspect.signature(post).parameters)[1:] != ["request", "protocol", "writer"]:
        why.append(
            f"WebSocketResponse._post_start{inspect.signature(post)} is not "
            f"(request, protocol, writer)"
        )
    if not callable(getattr(web.WebSocketResponse, "_handle_ping_pong_exception", None)):
        why.append("WebSocketResponse._handle_ping_pong_exception is gone")
    probe = web.WebSocketResponse()
    missing = [a for a in _WS_ATTRS if not hasattr(probe, a)]
    if missing:
        why.append(f"WebSocketResponse has no {', '.join(missing)}")
    from aiohttp.web_protocol import RequestHandler

    for m in ("set_parser", "keep_alive"):
        if not callable(getattr(RequestHandler, m, None)):
            why.append(f"RequestHandler.{m} is gone")
    return why


DIRECT_PROBLEM = aiohttp_direct_problem()
DIRECT = DIRECT_PROBLEM is None  # read per connection (tests turn it off)

CLOSE_AUTH = 4001  # auth timeout / failed header auth
CLOSE_REVOKED = 4003  # the API key was revoked
CLOSE_SLOW = 4008  # slow consumer
CLOSE_TOO_MANY = 4029  # over the API key's connection cap (HTTP 429's meaning)

_HEADS: dict[str, bytes] = {}  # channel -> b'{"channel":"...","seq":' (few distinct)
WRITE_HIGH = 1 << 20  # bytes buffered in the socket's transport before the writer waits


def _text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed websocket text frame (RFC 6455 server frame)."""
    return _FRAME_HEAD[len(payload)] + payload


class _FrameHeads(dict):
    """payload length -> the header of a final, unmasked, uncompressed text frame (RFC 6455
    server frame), computed once per length (messages come in few sizes); bounded."""

    def __missing__(self, n: int) -> bytes:
        if n < 126:
            h = bytes((0x81, n))
        elif n < 65536:
            h = b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            return b"\x81\x7f" + n.to_bytes(8, "big")  # large: not kept
        if len(self) >= 65536:
            self.clear()
        self[n] = h
        return h


_FRAME_HEAD: dict = _FrameHeads()


def _err_bytes(req_id, code: str, message: str) -> bytes:
    return _dumps({"req_id": req_id, "ok": False, "error": {"code": code, "message": message}})


class _DirectQueue(WebSocketDataQueue):
    """aiohttp's queue of parsed websocket messages, short-circuited for text frames: the
    frame parser (aiohttp's, in C) hands each complete text message straight to the session
    inside the transport's ``data_received``, instead of queueing a message object, waking
    the handler task and going through ``receive()`` and ``async for`` per message. Control
    frames (close, ping, pong) and errors take aiohttp's normal path."""

    def __init__(self, protocol, limit, *, loop, session):
        super().__init__(protocol, limit, loop=loop)
        self.session = session

    def feed_data(self, data, size) -> None:
        s = self.session
        s.rx = True  # anything from the peer counts for the heartbeat
        t = data[0]
        if (t is TEXT or t is BINARY) and s.transport is not None:
            if not s.closed:
                try:
                    if t is TEXT:
                        s.on_text(data[1])
                    else:
                        s.error(
                            None,
                            E.BINARY_NOT_SUPPORTED,
                            "binary frames are not supported; send JSON text frames",
                        )
                except Exception as exc:  # on_text answers errors itself; a bug must not
                    s.gw.log_exception(exc)  # reach the frame parser
            return
        WebSocketDataQueue.feed_data(self, data, size)


class _DirectWS(web.WebSocketResponse):
    """A WebSocketResponse whose text frames go straight to ``session.on_text`` (see
    _DirectQueue). Where the internals are not what this was written against (``DIRECT``
    false) it is a plain WebSocketResponse with aiohttp's heartbeat (``direct`` is then
    False)."""

    session: Session | None = None
    direct = False

    def __init__(self, *, heartbeat=None, **kw):
        # the gateway's own heartbeat (Gateway._heartbeat: one timer for all sessions) is
        # used on the direct path; aiohttp's - a call_soon and a timer reset per received
        # chunk - on the public one
        super().__init__(heartbeat=None if DIRECT else heartbeat, **kw)
        self.hb = heartbeat

    def _aiohttp_heartbeat(self) -> None:
        """aiohttp's heartbeat after all (what its __init__ sets for ``heartbeat``): only
        when the direct path failed on a connection although DIRECT held."""
        if self.hb:
            self._heartbeat = self.hb
            self._pong_heartbeat = self.hb / 2.0

    def _post_start(self, request, protocol, writer) -> None:
        s = self.session
        if not DIRECT or s is None:
            if DIRECT:  # (constructed for the direct path: heartbeat left to the gateway)
                self._aiohttp_heartbeat()
            return super()._post_start(request, protocol, writer)
        try:
            self._ws_protocol = protocol
            self._writer = writer
            tr = request.transport
            if tr is not None and hasattr(tr, "get_write_buffer_size"):
                s.transport = tr  # frames that arrive with the handshake are answered
            self._reader = _DirectQueue(request.protocol, _CHUNK, loop=self._loop, session=s)
            self._parser = _DirectReader(
                self._reader,
                self._max_msg_size,
                compress=bool(self._compress),
                decode_text=self._decode_text,
            )
        except Exception:  # not the aiohttp this was written for
            s.transport = None
            self._reader = self._parser = None
            self._aiohttp_heartbeat()
            return super()._post_start(request, protocol, writer)
        self.direct = True
        request.protocol.set_parser(self._parser)
        request.protocol.keep_alive(False)
        if self.hb:
            s.gw.watch_heartbeat(s, self.hb)

    def heartbeat_timeout(self) -> None:
        """No pong in time: close the connection as aiohttp's own heartbeat does."""
        try:
            self._handle_ping_pong_exception(
                asyncio.TimeoutError("no PONG received within the heartbeat")
            )
        except Exception:
            tr = self.session.transport if self.session is not None else None
            if tr is not None:
                tr.abort()
