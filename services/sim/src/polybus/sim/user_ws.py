"""The user channel (``/ws/user``): an API key's order and trade events.

The first frame must be ``{"auth": {"apiKey", "secret", "passphrase"}, "markets": [...],
"type": "user"}`` within ``subscribe_timeout_s``; credentials that do not match a key close
the socket (1008). ``markets`` (condition ids) filters events; omitted or empty means every
market of the key. ``{"operation": "subscribe"|"unsubscribe", "markets": [...]}`` edits the
filter; text ``PING`` is answered ``PONG``.
"""

from __future__ import annotations

import asyncio

import msgspec
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from polybus.common.polymarket.clob import PolymarketApiCredentials
from polybus.common.polymarket.user_channel import PolymarketUserSubscription
from polybus.sim.auth import ApiKeys
from polybus.sim.market_ws import BAD_CLIENT_MESSAGES, PONG, SimSocket, SocketRegistry

_log = structlog.get_logger("polybus.sim.user_ws")


_decoder = msgspec.json.Decoder(PolymarketUserSubscription)


class UserHub:
    """Authenticated user sockets by API key, and delivery of their events."""

    def __init__(
        self, api_keys: ApiKeys, registry: SocketRegistry, *, subscribe_timeout_s: float
    ) -> None:
        self.api_keys = api_keys
        self.registry = registry
        self.subscribe_timeout_s = subscribe_timeout_s
        self.sockets: dict[str, set[SimSocket]] = {}

    def send(self, api_key: str, market: str, data: bytes) -> None:
        """Deliver one encoded event to the key's sockets whose filter admits ``market``."""
        sockets = self.sockets.get(api_key)
        if not sockets:
            return
        targets = []
        for socket in sockets:
            markets: set[str] = socket.extra["markets"]
            if not markets or market.lower() in markets:
                socket.push(data)
                targets.append(socket)
        self.registry.wake(targets)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        socket = self.registry.open("user", ws, request)
        socket.extra["markets"] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.subscribe_timeout_s
        try:
            while not socket.closed:
                timeout = None if socket.subscribed else max(deadline - loop.time(), 0.0)
                try:
                    message = await ws.receive(timeout=timeout)
                except TimeoutError:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no subscription")
                    break
                if message.type != WSMsgType.TEXT:
                    break
                if message.data == "PING":
                    socket.push(PONG)
                    self.registry.wake((socket,))
                    continue
                if not await self._on_text(socket, message.data):
                    break
        finally:
            api_key = socket.extra.get("api_key")
            if api_key:
                self.sockets.get(api_key, set()).discard(socket)
            self.registry.close(socket)
        return ws

    async def _on_text(self, socket: SimSocket, text: str) -> bool:
        """Handle one client frame; False closes the socket."""
        try:
            frame = _decoder.decode(text)
        except msgspec.DecodeError:
            BAD_CLIENT_MESSAGES.labels("user").inc()
            return True
        if not socket.subscribed:
            auth = frame.auth or PolymarketApiCredentials()
            key = self.api_keys.verify_ws(auth.api_key, auth.secret, auth.passphrase)
            if key is None:
                _log.info("ws.user.auth_failed", socket=socket.id)
                await socket.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"invalid auth")
                return False
            socket.subscribed = True
            socket.extra["api_key"] = key.key
            socket.extra["markets"] = {m.lower() for m in frame.markets or []}
            self.sockets.setdefault(key.key, set()).add(socket)
            return True
        markets = {m.lower() for m in frame.markets or []}
        operation = frame.operation.lower()
        if operation == "subscribe":
            socket.extra["markets"] |= markets
        elif operation == "unsubscribe":
            socket.extra["markets"] -= markets
        else:
            BAD_CLIENT_MESSAGES.labels("user").inc()
        return True
