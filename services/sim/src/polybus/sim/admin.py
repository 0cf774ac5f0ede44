"""The admin API (``/admin/...``): faults, flow control, injections and inspection.

``POST /admin/faults/<name>`` takes a JSON body of the fault's parameters (unknown keys are a
400 naming them); ``GET /admin/state`` shows sockets, faults and flow; ``GET /admin/book``
the simulator's own view of a book. Never subject to the HTTP faults.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec
from aiohttp import web

from polybus.common.money import FixedPointError, parse_price, parse_tick_size
from polybus.sim.http_util import error_response, json_response

if TYPE_CHECKING:
    from polybus.sim.server import Simulator


class _Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class SocketTarget(_Body, kw_only=True):
    socket_id: int | None = None
    channel: Literal["market", "user", "all"] = "market"


class DisconnectTarget(_Body, kw_only=True):
    socket_id: int | None = None
    channel: Literal["market", "user", "all"] = "all"


class AssetTarget(_Body, kw_only=True):
    asset_id: str


class CrossedBurst(_Body, kw_only=True):
    condition_id: str = ""
    duration_ms: int = 300


class InjectFrame(_Body, kw_only=True):
    kind: Literal["malformed", "unknown", "invalid_json"] = "malformed"
    socket_id: int | None = None


class TickChange(_Body, kw_only=True):
    asset_id: str = ""
    condition_id: str = ""
    tick_size: str


class Restart(_Body, kw_only=True):
    duration_s: float = 90.0
    post_only_s: float | None = None


class Window(_Body, kw_only=True):
    duration_s: float = 60.0


class RateLimit(_Body, kw_only=True):
    count: int = 5
    retry_after_s: int = 1


class Slow(_Body, kw_only=True):
    delay_ms: int
    count: int | None = None
    duration_s: float | None = None


class Count(_Body, kw_only=True):
    count: int = 1


class RetrySettlement(_Body, kw_only=True):
    count: int = 1
    then: Literal["CONFIRMED", "FAILED"] = "CONFIRMED"


class TakerDelay(_Body, kw_only=True):
    condition_id: str
    delay_ms: int = 250


class LoseOrderResponse(_Body, kw_only=True):
    count: int = 1
    mode: Literal["hold", "drop"] = "hold"
    hold_s: float = 30.0


class DeployWallet(_Body, kw_only=True):
    address: str
    owner: str
    signature_type: Literal[1, 2, 3]


class Empty(_Body, kw_only=True):
    pass


class Mispricing(_Body, kw_only=True):
    event_id: str = ""
    condition_id: str = ""
    edge: str = "0.02"
    """A price difference, as the venue writes numbers (parsed exactly)."""
    duration_ms: int = 300


class Resolve(_Body, kw_only=True):
    winning_asset_id: str = ""


BodyT = TypeVar("BodyT", bound=_Body)


async def _body(request: web.Request, type_: type[BodyT]) -> BodyT:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=type_)
    except msgspec.DecodeError as error:
        raise web.HTTPBadRequest(
            text=msgspec.json.encode({"error": str(error)}).decode(),
            content_type="application/json",
        ) from None


class Admin:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/state", self.state),
            web.get("/admin/sockets", self.sockets),
            web.get("/admin/markets", self.markets),
            web.post("/admin/markets", self.create_market),
            web.post("/admin/markets/{condition_id}/resolve", self.resolve_market),
            web.get("/admin/book", self.book),
            web.post("/admin/flow/pause", self.pause),
            web.post("/admin/flow/resume", self.resume),
            web.post("/admin/flush", self.flush),
            web.get("/admin/faults", self.faults_status),
            web.post("/admin/faults/{name}", self.fault),
            web.post("/admin/mispricing", self.mispricing),
            web.post("/admin/wallets", self.deploy_wallet),
        ]

    async def deploy_wallet(self, request: web.Request) -> web.Response:
        """Put a proxy (1), Safe (2) or deposit wallet (3) owned by an EOA on the chain."""
        body = await _body(request, DeployWallet)
        try:
            wallet = self.sim.trading.wallets.deploy(
                address=body.address, owner=body.owner, signature_type=body.signature_type
            )
        except ValueError as error:
            return error_response(400, str(error))
        return json_response(wallet)

    async def state(self, request: web.Request) -> web.Response:
        return json_response(self.sim.state())

    async def sockets(self, request: web.Request) -> web.Response:
        return json_response([asdict(info) for info in self.sim.registry.info()])

    async def markets(self, request: web.Request) -> web.Response:
        return json_response(self.sim.markets())

    async def create_market(self, request: web.Request) -> web.Response:
        return json_response(self.sim.exchange.create_market())

    async def resolve_market(self, request: web.Request) -> web.Response:
        body = await _body(request, Resolve)
        try:
            market = self.sim.exchange.resolve_market(
                request.match_info["condition_id"], body.winning_asset_id
            )
        except KeyError:
            return error_response(404, "unknown market or outcome")
        return json_response(market)

    async def book(self, request: web.Request) -> web.Response:
        asset_id = request.query.get("asset_id", "") or request.query.get("token_id", "")
        try:
            bids, asks = self.sim.book(asset_id)
        except KeyError:
            return error_response(404, "unknown asset")
        return json_response({"asset_id": asset_id, "bids": bids, "asks": asks})

    async def pause(self, request: web.Request) -> web.Response:
        await self.sim.pause_flow()
        return json_response({"flow": "paused"})

    async def resume(self, request: web.Request) -> web.Response:
        await self.sim.resume_flow()
        return json_response({"flow": "running"})

    async def flush(self, request: web.Request) -> web.Response:
        await self.sim.flush()
        return json_response({"flushed": True})

    async def faults_status(self, request: web.Request) -> web.Response:
        return json_response(self.sim.faults.status())

    async def mispricing(self, request: web.Request) -> web.Response:
        body = await _body(request, Mispricing)
        try:
            edge = parse_price(body.edge)
        except FixedPointError as error:
            return error_response(400, str(error))
        try:
            injected = self.sim.inject_mispricing(
                event_id=body.event_id,
                condition_id=body.condition_id,
                edge=edge,
                duration_ms=body.duration_ms,
            )
        except KeyError:
            return error_response(404, "unknown event or market")
        return json_response({"injected": injected})

    async def fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        handler = self._fault_handlers().get(name)
        if handler is None:
            return error_response(
                404, f"unknown fault {name!r}", known=sorted(self._fault_handlers())
            )
        try:
            result = await handler(request)
        except KeyError as error:
            return error_response(404, f"unknown id {error}")
        except (ValueError, FixedPointError) as error:
            return error_response(400, str(error))
        return json_response({"fault": name, "result": result, "status": self.sim.faults.status()})

    def _fault_handlers(  # noqa: C901 - a flat table of one small closure per fault
        self,
    ) -> dict[str, Callable[[web.Request], Awaitable[Any]]]:
        faults = self.sim.faults

        async def stall(request: web.Request) -> Any:
            body = await _body(request, SocketTarget)
            return faults.stall(body.socket_id, body.channel)

        async def unstall(request: web.Request) -> Any:
            body = await _body(request, SocketTarget)
            return faults.unstall(body.socket_id, body.channel)

        async def disconnect(request: web.Request) -> Any:
            body = await _body(request, DisconnectTarget)
            return faults.disconnect(body.socket_id, body.channel)

        async def drop_price_change(request: web.Request) -> Any:
            body = await _body(request, AssetTarget)
            faults.drop_next_price_change(body.asset_id)
            return body.asset_id

        async def crossed_burst(request: web.Request) -> Any:
            body = await _body(request, CrossedBurst)
            return faults.crossed_burst(body.condition_id, body.duration_ms)

        async def inject_frame(request: web.Request) -> Any:
            body = await _body(request, InjectFrame)
            return faults.inject_frame(body.kind, body.socket_id)

        async def tick_change(request: web.Request) -> Any:
            body = await _body(request, TickChange)
            target = body.asset_id or body.condition_id
            faults.change_tick(target, parse_tick_size(body.tick_size))
            return target

        async def restart(request: web.Request) -> Any:
            body = await _body(request, Restart)
            faults.restart(body.duration_s, body.post_only_s)
            return None

        async def post_only(request: web.Request) -> Any:
            faults.post_only((await _body(request, Window)).duration_s)

        async def cancel_only(request: web.Request) -> Any:
            faults.cancel_only((await _body(request, Window)).duration_s)

        async def trading_disabled(request: web.Request) -> Any:
            faults.trading_disabled((await _body(request, Window)).duration_s)

        async def rate_limit(request: web.Request) -> Any:
            body = await _body(request, RateLimit)
            faults.rate_limit_burst(body.count, body.retry_after_s)

        async def slow(request: web.Request) -> Any:
            body = await _body(request, Slow)
            faults.slow_responses(body.delay_ms, count=body.count, duration_s=body.duration_s)

        async def fail_settlement(request: web.Request) -> Any:
            faults.fail_next_settlements((await _body(request, Count)).count)

        async def retry_settlement(request: web.Request) -> Any:
            body = await _body(request, RetrySettlement)
            faults.retry_next_settlements(body.count, body.then)

        async def taker_delay(request: web.Request) -> Any:
            body = await _body(request, TakerDelay)
            faults.taker_delay(body.condition_id, body.delay_ms)
            return body.condition_id

        async def lose_order_response(request: web.Request) -> Any:
            body = await _body(request, LoseOrderResponse)
            faults.lose_order_responses(body.count, mode=body.mode, hold_s=body.hold_s)

        async def clear(request: web.Request) -> Any:
            await _body(request, Empty)
            faults.clear()

        return {
            "stall": stall,
            "unstall": unstall,
            "disconnect": disconnect,
            "drop_price_change": drop_price_change,
            "crossed_burst": crossed_burst,
            "inject_frame": inject_frame,
            "tick_change": tick_change,
            "restart": restart,
            "post_only": post_only,
            "cancel_only": cancel_only,
            "trading_disabled": trading_disabled,
            "rate_limit": rate_limit,
            "slow": slow,
            "fail_settlement": fail_settlement,
            "retry_settlement": retry_settlement,
            "taker_delay": taker_delay,
            "lose_order_response": lose_order_response,
            "clear": clear,
        }
