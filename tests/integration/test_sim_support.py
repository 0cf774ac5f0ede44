"""Helpers for the simulator's integration tests (no tests here): a plain websockets client
that keeps a replica of the books it is sent, the way an ingest would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from polybus.common.money import parse_price, parse_size
from polybus.common.polymarket.book_hash import format_price

DEADLINE_S = 10.0


class MarketClient:
    """A market-channel connection: raw frames in order, decoded events, a replica book."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.books: dict[str, dict[str, dict[int, int]]] = {}
        self.position = 0
        """Events before this index were consumed by :meth:`until`."""

    async def subscribe(self, assets: list[str], **extra: Any) -> None:
        await self.ws.send(
            json.dumps(
                {"assets_ids": assets, "type": "market", "initial_dump": True, "level": 2, **extra}
            )
        )

    async def recv_frame(self, timeout: float = DEADLINE_S) -> str:
        async with asyncio.timeout(timeout):
            frame = await self.ws.recv()
        assert isinstance(frame, str)
        self.frames.append(frame)
        if frame != "PONG":
            decoded = json.loads(frame)
            for event in decoded if isinstance(decoded, list) else [decoded]:
                self.events.append(event)
                self.apply(event)
        return frame

    async def until(self, predicate: Any, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """The next event (after the last one returned) that satisfies ``predicate``,
        receiving as needed."""
        async with asyncio.timeout(timeout):
            while True:
                while self.position < len(self.events):
                    event = self.events[self.position]
                    self.position += 1
                    if predicate(event):
                        return event
                await self.recv_frame(timeout)

    async def sync(self, timeout: float = DEADLINE_S) -> None:
        """PING and read up to the PONG: everything the server queued before is received."""
        await self.ws.send("PING")
        async with asyncio.timeout(timeout):
            while await self.recv_frame(timeout) != "PONG":
                pass

    def apply(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("event_type")
        if kind == "book" and isinstance(event.get("bids"), list):
            self.books[event["asset_id"]] = {
                "BUY": {parse_price(lv["price"]): parse_size(lv["size"]) for lv in event["bids"]},
                "SELL": {parse_price(lv["price"]): parse_size(lv["size"]) for lv in event["asks"]},
            }
        elif kind == "price_change" and isinstance(event.get("price_changes"), list):
            for entry in event["price_changes"]:
                book = self.books.get(entry["asset_id"])
                if book is None:
                    continue
                size = parse_size(entry["size"])
                side = book[entry["side"]]
                if size:
                    side[parse_price(entry["price"])] = size
                else:
                    side.pop(parse_price(entry["price"]), None)

    def view(self, asset: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        book = self.books[asset]
        return sorted(book["BUY"].items(), reverse=True), sorted(book["SELL"].items())

    def best(self, asset: str) -> tuple[str, str]:
        bids, asks = self.view(asset)
        return (
            format_price(bids[0][0]) if bids else "0",
            format_price(asks[0][0]) if asks else "1",
        )


@asynccontextmanager
async def market_client(url: str) -> AsyncIterator[MarketClient]:
    async with websockets.connect(url, max_size=1 << 24) as ws:
        yield MarketClient(ws)


# -- trading ------------------------------------------------------------------------------------
ZERO32 = "0x" + "00" * 32
CTF_EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_CTF_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"


class Trader:
    """A raw-HTTP trader: L1/L2 headers and EIP-712 orders built independently of the
    simulator (typed data as the official SDK builds it, signed by eth-account)."""

    def __init__(self, http: Any, private_key: str) -> None:
        from eth_account import Account

        self.http = http
        self.account = Account.from_key(private_key)
        self.address: str = self.account.address
        self.creds: dict[str, str] = {}
        self.salt = 1000

    def l1_headers(self, nonce: int = 0, timestamp: int | None = None) -> dict[str, str]:
        import time

        from polymarket._internal.l1_auth import sign_api_key_auth

        signed = sign_api_key_auth(
            self.account, chain_id=137, timestamp=timestamp or int(time.time()), nonce=nonce
        )
        return {
            "POLY_ADDRESS": signed.address,
            "POLY_SIGNATURE": signed.signature,
            "POLY_TIMESTAMP": str(signed.timestamp),
            "POLY_NONCE": str(signed.nonce),
        }

    async def login(self) -> dict[str, str]:
        response = await self.http.post("/auth/api-key", headers=self.l1_headers())
        assert response.status_code == 200, response.text
        self.creds = response.json()
        return self.creds

    def l2_headers(self, method: str, path: str, body: str = "") -> dict[str, str]:
        import base64
        import hashlib
        import hmac
        import time

        timestamp = str(int(time.time()))
        secret = base64.urlsafe_b64decode(self.creds["secret"])
        digest = hmac.new(
            secret, f"{timestamp}{method}{path}{body}".encode(), hashlib.sha256
        ).digest()
        return {
            "POLY_ADDRESS": self.address,
            "POLY_SIGNATURE": base64.urlsafe_b64encode(digest).decode(),
            "POLY_TIMESTAMP": timestamp,
            "POLY_API_KEY": self.creds["apiKey"],
            "POLY_PASSPHRASE": self.creds["passphrase"],
        }

    async def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        text = "" if body is None else json.dumps(body, separators=(",", ":"))
        return await self.http.request(
            method,
            path,
            content=text.encode() if text else None,
            params=params or None,
            headers={**self.l2_headers(method, path, text), "Content-Type": "application/json"},
        )

    def order(
        self,
        token_id: str,
        *,
        side: str,
        price: int,
        size: int,
        neg_risk: bool = False,
        order_type: str = "GTC",
        post_only: bool = False,
        expiration: int = 0,
        amounts: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """A signed POST /order body; ``price`` and ``size`` in micros, or (maker, taker)
        ``amounts`` as given (a ratio off the tick grid, as an SDK market order has)."""
        import time

        from polymarket._internal.actions.orders.typed_data import build_order_typed_data
        from polymarket._internal.actions.orders.types import UnsignedOrder

        collateral = size * price // 1_000_000
        maker_amount, taker_amount = (collateral, size) if side == "BUY" else (size, collateral)
        if amounts is not None:
            maker_amount, taker_amount = amounts
        self.salt += 1
        unsigned = UnsignedOrder(
            chain_id=137,
            builder=ZERO32,
            exchange_address=NEG_RISK_CTF_EXCHANGE_V2 if neg_risk else CTF_EXCHANGE_V2,
            expiration=expiration,
            maker=self.address,
            maker_amount=maker_amount,
            metadata=ZERO32,
            order_type=order_type,  # type: ignore[arg-type]
            salt=self.salt,
            side=side,  # type: ignore[arg-type]
            signature_type=0,
            signer=self.address,
            taker_amount=taker_amount,
            timestamp=int(time.time() * 1000),
            token_id=token_id,  # type: ignore[arg-type]
        )
        signed = self.account.sign_typed_data(full_message=build_order_typed_data(unsigned))
        body: dict[str, Any] = {
            "order": {
                "salt": self.salt,
                "maker": self.address,
                "signer": self.address,
                "tokenId": token_id,
                "makerAmount": str(maker_amount),
                "takerAmount": str(taker_amount),
                "side": side,
                "expiration": str(expiration),
                "signatureType": 0,
                "timestamp": str(unsigned.timestamp),
                "metadata": ZERO32,
                "builder": ZERO32,
                "signature": "0x" + signed.signature.hex(),
            },
            "owner": self.creds["apiKey"],
            "orderType": order_type,
            "deferExec": False,
        }
        if post_only:
            body["postOnly"] = True
        return body


class UserClient:
    """A user-channel connection that collects its events."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.position = 0

    async def until(self, predicate: Any, timeout: float = DEADLINE_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                while self.position < len(self.events):
                    event = self.events[self.position]
                    self.position += 1
                    if predicate(event):
                        return event
                frame = await self.ws.recv()
                assert isinstance(frame, str)
                if frame != "PONG":
                    decoded = json.loads(frame)
                    self.events.extend(decoded if isinstance(decoded, list) else [decoded])


@asynccontextmanager
async def user_client(
    url: str, creds: dict[str, str], markets: list[str] | None = None
) -> AsyncIterator[UserClient]:
    async with websockets.connect(url) as ws:
        frame: dict[str, Any] = {"auth": creds, "type": "user"}
        if markets is not None:
            frame["markets"] = markets
        await ws.send(json.dumps(frame))
        client = UserClient(ws)
        # The server answers PING only once the auth frame is processed.
        await ws.send("PING")
        async with asyncio.timeout(DEADLINE_S):
            assert await ws.recv() == "PONG"
        yield client
