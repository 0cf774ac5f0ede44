"""The CLOB REST market data the ingest reads: ``GET /book`` to seed a book (VENUE §5.1)."""

from __future__ import annotations

import httpx
import msgspec

from polybus.common.polymarket.rest import PolymarketOrderBookSummary

_book_decoder = msgspec.json.Decoder(PolymarketOrderBookSummary)


class ClobClient:
    """Public CLOB reads over one shared ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def book(self, asset_id: str) -> PolymarketOrderBookSummary:
        """The asset's book; raises ``httpx.HTTPStatusError`` on 4xx/5xx."""
        response = await self.http.get(f"{self.base_url}/book", params={"token_id": asset_id})
        response.raise_for_status()
        return _book_decoder.decode(response.content)
