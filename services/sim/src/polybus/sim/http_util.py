"""Small HTTP helpers shared by the simulator's REST surfaces (CLOB, Gamma, admin)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from polybus.common.money import format_micros

_encoder = msgspec.json.Encoder()


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """The venue's error body: ``{"error": "...", ...}``."""
    return json_response({"error": message, **extra}, status=status, headers=headers)


def number(micros: int) -> msgspec.Raw:
    """A JSON number written exactly from micro-units (``0.5``, ``5``): no float involved."""
    return msgspec.Raw(format_micros(micros).encode())


def query_list(request: web.Request, name: str) -> list[str]:
    """A repeatable query parameter, also accepting comma-separated values."""
    values: list[str] = []
    for value in request.query.getall(name, []):
        values.extend(part for part in value.split(",") if part)
    return values


def query_bool(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    return value.lower() in ("true", "1", "yes")


def query_int(request: web.Request, name: str, default: int, *, maximum: int) -> int:
    value = request.query.get(name, "")
    try:
        parsed = int(value) if value else default
    except ValueError:
        raise web.HTTPBadRequest(
            text=_encoder.encode({"error": f"invalid {name}"}).decode(),
            content_type="application/json",
        ) from None
    return min(max(parsed, 0), maximum)
