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
