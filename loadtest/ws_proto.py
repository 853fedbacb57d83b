"""A lean websocket client for the load generator: an ``asyncio.Protocol`` that speaks just
enough RFC 6455 to talk to an aiohttp server.

Why not ``aiohttp.ClientSession.ws_connect``: the generator shares two cores with the server it
measures, so every microsecond it spends is taken from the server. aiohttp's client costs one
``transport.write`` (one ``send`` syscall) per message plus a task/queue hop per received
message. Here the sender appends pre-built frames to a per-connection list and writes them
with one ``transport.write`` per scheduler tick, and received frames are parsed in place from
``data_received`` with no task switch. Client frames use the all-zero masking key, which RFC
6455 permits (the key must be present, XOR with zero leaves the payload as is), so a frame is
a 6- or 8-byte header plus the JSON text, with no per-byte masking work.

The protocol is only what the load test needs: text frames, ping/pong, close; no extensions
(no ``permessage-deflate``: it is never offered), no fragmentation on send.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Callable

_MASK0 = b"\x00\x00\x00\x00"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def text_frame(payload: bytes) -> bytes:
    """A masked (zero key) final text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, 0x80 | n)) + _MASK0 + payload
    if n < 65536:
        return b"\x81\xfe" + n.to_bytes(2, "big") + _MASK0 + payload
    return b"\x81\xff" + n.to_bytes(8, "big") + _MASK0 + payload


def control_frame(op: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | op, 0x80 | len(payload))) + _MASK0 + payload


class HandshakeError(Exception):
    pass


class WSClientProtocol(asyncio.Protocol):
    """One websocket connection. ``on_message(payload: bytes)`` is called for every complete
    text or binary message, in order, from ``data_received``."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        on_message: Callable[[bytes], None],
        headers: dict[str, str] | None = None,
    ):
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.handshake_done = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self._buf = b""
        self._frag: list[bytes] | None = None
        self._upgraded = False
        self.bytes_in = 0
        self.frames_in = 0
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        ).encode()

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc):
        if not self.handshake_done.done():
            self.handshake_done.set_exception(HandshakeError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes):
        self.bytes_in += len(data)
        if not self._upgraded:
            data = self._buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            head = data[:end].decode("latin-1")
            status = head.split("\r\n", 1)[0]
            if " 101 " not in status + " ":
                self._buf = b""
                if not self.handshake_done.done():
                    self.handshake_done.set_exception(HandshakeError(status))
                self.transport.close()
                return
            self._upgraded = True
            self._buf = b""
            if not self.handshake_done.done():
                self.handshake_done.set_result(head)
            data = data[end + 4 :]
            if not data:
                return
        elif self._buf:
            data = self._buf + data
        n = len(data)
        pos = 0
        on_message = self.on_message
        frames = 0
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            ln = b1 & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            masked = b1 & 0x80
            if masked:
                hl += 4
            end = pos + hl + ln
            if end > n:
                break
            payload = data[pos + hl : end]
            if masked:  # servers do not mask; handle it anyway
                key = data[pos + hl - 4 : pos + hl]
                payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
            pos = end
            frames += 1
            op = b0 & 0x0F
            if op == OP_TEXT or op == OP_BINARY:
                if b0 & 0x80:
                    on_message(payload)
                else:
                    self._frag = [payload]
            elif op == OP_CONT:
                if self._frag is not None:
                    self._frag.append(payload)
                    if b0 & 0x80:
                        msg = b"".join(self._frag)
                        self._frag = None
                        on_message(msg)
            elif op == OP_PING:
                self.transport.write(control_frame(OP_PONG, payload[:125]))
            elif op == OP_CLOSE:
                if len(payload) >= 2:
                    self.close_code = (payload[0] << 8) | payload[1]
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                else:
                    self.close_code = 1005
                try:
                    self.transport.write(control_frame(OP_CLOSE, payload[:2]))
                finally:
                    self.transport.close()
                break
        self.frames_in += frames
        self._buf = data[pos:] if pos < n else b""

    # ------------------------------------------------------------------ sending
    def send_frames(self, frames: bytes):
        """Write already built frames (one ``transport.write``)."""
        self.transport.write(frames)

    def send_text(self, payload: bytes):
        self.transport.write(text_frame(payload))

    def close(self, code: int = 1000):
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(control_frame(OP_CLOSE, code.to_bytes(2, "big")))
            except Exception:
                pass
            self.transport.close()


async def ws_connect(
    url: str,
    on_message: Callable[[bytes], None],
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> WSClientProtocol:
    """Open ``ws://host:port/path`` and complete the upgrade handshake."""
    if not url.startswith("ws://"):
        raise ValueError("only ws:// URLs are supported by the load generator")
    rest = url[5:]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: WSClientProtocol(host, int(port), "/" + path, on_message, headers),
            host,
            int(port),
        ),
        timeout,
    )
    await asyncio.wait_for(proto.handshake_done, timeout)
    return proto
