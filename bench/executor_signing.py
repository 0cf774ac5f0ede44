"""Live adapter costs, beside the bare SDK in the same run.

    uv run python -m bench.executor_signing [--orders 1000] [--round-trips 500]

- create + sign one GTC order through the adapter (market facts seeded into the SDK's cache,
  decimal conversion, the SDK's ``create_limit_order``) beside the bare
  ``create_limit_order`` call with a warm SDK cache;
- submit → ack: ``PolymarketLiveVenue.submit`` of one resting order against the in-process
  simulator over loopback HTTP (signing, token bucket, POST /orders, the simulator's
  signature check and matching), p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from decimal import Decimal

from eth_account import Account

from polybus.common.config import Secret
from polybus.common.money import MICROS
from polybus.executor.live.adapter import PolymarketLiveVenue
from polybus.executor.live.client import LiveAccount, create_client, private_environment
from polybus.executor.live.limits import SignerLimits
from polybus.executor.venue import SubmitAccepted, VenueOrder
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator

KEY = "0x" + "b7" * 32


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms"


async def main(orders: int, round_trips: int) -> None:
    settings = SimSettings(
        port=0,
        seed=5,
        binary_markets=2,
        neg_risk_events=0,
        flow=False,
        connect_bus=False,
        starting_collateral=10**9,
        rate_limit_tier="elite",
    )
    async with Simulator(settings) as sim:
        account = LiveAccount(
            private_key=Secret(KEY), wallet=Account.from_key(KEY).address, signature_type="EOA"
        )
        client = await create_client(account, private_environment(clob_url=sim.http_url))
        # A huge tier: the bench measures our cost, not the venue's rate limit.
        venue = PolymarketLiveVenue(client, limits=SignerLimits("elite"))
        market = next(m for m in sim.markets() if m.tick_size == 10_000)
        bids, _ = sim.book(market.yes)
        price = bids[0][0] - 5 * market.tick_size
        order = VenueOrder(
            client_order_id="bench",
            condition_id=market.condition_id,
            asset_id=market.yes,
            side="BUY",
            price=price,
            size=5 * MICROS,
            tick_size=market.tick_size,
        )
        await client.create_limit_order(
            asset_id=market.yes, price=str(Decimal(price) / MICROS), size="5", side="BUY"
        )
        adapter_times, bare_times = [], []
        for _ in range(orders):
            started = time.perf_counter()
            await venue._sign(order)
            adapter_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            await client.create_limit_order(
                asset_id=market.yes, price=str(Decimal(price) / MICROS), size="5", side="BUY"
            )
            bare_times.append(time.perf_counter() - started)
        print(f"sign, adapter  ({orders}): {_percentiles(adapter_times)}")
        print(f"sign, bare SDK ({orders}): {_percentiles(bare_times)}")
        trips = []
        for n in range(round_trips):
            started = time.perf_counter()
            [result] = await venue.submit([order])
            trips.append(time.perf_counter() - started)
            assert isinstance(result, SubmitAccepted), (n, result)
        print(f"submit -> ack  ({round_trips}): {_percentiles(trips)}")
        await venue.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--round-trips", type=int, default=500)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.orders, arguments.round_trips))
