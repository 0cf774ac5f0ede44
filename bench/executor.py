"""The executor service end to end, beside a bare NATS request/reply hop in the same run.

    uv run python -m bench.executor [--live-intents 300] [--paper-intents 3000]

- intent → order acknowledged by the simulator (live adapter, signing included): the time from
  publishing an ``OrderIntent`` (JetStream ack) to the executor's ``accepted`` ``OrderEvent``
  arriving on EXEC, one intent at a time, p50/p99 (DESIGN §9 target: p50 ≤ 3 ms);
- paper intents/s sustained: resting paper orders published as fast as the stream acks them,
  until the last is ``accepted``;
- a bare NATS request/reply round trip on the same server, for scale.

Everything runs on loopback: a nats-server of its own, the simulator in process, the
executor in process (``polybus.executor.service.run``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from polybus.common.bus import Message
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import BUILTIN_STREAMS_FILE, Config, load_config
from polybus.common.events import OrderEvent, OrderIntent, execution_decoder
from polybus.common.infra import RunningProcess, free_port
from polybus.common.infra.nats_server import nats_server_spec
from polybus.common.logs import configure_logging
from polybus.common.money import MICROS
from polybus.common.plugins import discover_plugins, section_types
from polybus.common.streams import load_definitions
from polybus.common.subjects import Namespace
from polybus.executor.service import run
from polybus.sim.config import SimSettings
from polybus.sim.server import Simulator
from tests.integration.test_executor_service_live import market_of, publish_sim_market

KEY = "0x" + "b8" * 32
PACE_S = 0.05


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms"


def _config(directory: Path, url: str, namespace: Namespace, executor: str) -> Config:
    path = directory / f"{namespace.stream_prefix}.toml"
    path.write_text(
        'secrets_file = "secrets.toml"\n'
        f'[bus]\nurl = "{url}"\nsubject_prefix = "{namespace.subject_prefix}"\n'
        f'stream_prefix = "{namespace.stream_prefix}"\n'
        f"[executor]\nmetrics_port = 0\n{executor}"
        "[executor.risk.strategy]\nmax_intent_age_s = 60.0\n"
    )
    return load_config(path, section_types(discover_plugins()))


class Answers:
    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def receive(self, message: Message) -> None:
        event = execution_decoder.decode(message.data)
        if isinstance(event, OrderEvent) and event.status in ("accepted", "rejected"):
            self.accepted[event.order_id] = time.perf_counter()
            self.changed.set()

    async def wait(self, order_id: str) -> float:
        while order_id not in self.accepted:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)
        return self.accepted[order_id]


async def _executor_round(
    url: str, directory: Path, sim: Simulator, token: str, executor: str, count: int, live: bool
) -> tuple[list[float], float]:
    namespace = Namespace(subject_prefix=f"b{token}", stream_prefix=f"B{token}_")
    bus = await NatsBus.connect(url, name="bench-executor", namespace=namespace)
    await bus.apply(load_definitions(BUILTIN_STREAMS_FILE))
    market = market_of(sim)
    await publish_sim_market(bus, sim, market)
    answers = Answers()
    await bus.subscribe(namespace.subjects.execution_all(), answers.receive)
    service = asyncio.create_task(run(_config(directory, url, namespace, executor), live=live))
    asset = market.tokens[0].token_id
    bids, _ = sim.book(asset)
    price = max(bids[0][0] - 5 * market.tick_size, market.tick_size)
    subject = namespace.subjects.intent("bench", market.condition_id)

    def intent(number: int) -> OrderIntent:
        now = time.time_ns()
        return OrderIntent(
            event_id=f"e{token}{number}", ts_event=now, ts_init=now,
            intent_id=f"i{token}{number}", strategy_id="bench", action="place",
            condition_id=market.condition_id, asset_id=asset, side="BUY",
            price=price, size=5 * MICROS,
        )  # fmt: skip

    try:
        warm = intent(0)
        await bus.publish_persistent(subject, warm, msg_id=warm.intent_id)
        await answers.wait(warm.intent_id)
        latencies: list[float] = []
        started = time.perf_counter()
        if live:
            for number in range(1, count + 1):
                order = intent(number)
                sent = time.perf_counter()
                await bus.publish_persistent(subject, order, msg_id=order.intent_id)
                latencies.append(await answers.wait(order.intent_id) - sent)
                # Paced under the standard tier's order rate: the executor's own token bucket
                # would otherwise make the wait, and this measures the path, not the limit.
                await asyncio.sleep(PACE_S)
        else:
            for number in range(1, count + 1):
                order = intent(number)
                await bus.publish_persistent(subject, order, msg_id=order.intent_id)
            await answers.wait(f"i{token}{count}")
        return latencies, time.perf_counter() - started
    finally:
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service
        await bus.drain()


async def _request_reply(url: str, count: int) -> list[float]:
    bus = await NatsBus.connect(url, name="bench-hop")

    async def answer(message: Message) -> None:
        await bus.respond(message, b"ok")

    await bus.subscribe("bench.hop", answer)
    samples = []
    for _ in range(count):
        sent = time.perf_counter()
        await bus.request("bench.hop", b"x")
        samples.append(time.perf_counter() - sent)
    await bus.drain()
    return samples


async def main(live_intents: int, paper_intents: int) -> None:
    with tempfile.TemporaryDirectory(prefix="polybus-bench-") as name:
        directory = Path(name)
        (directory / "secrets.toml").write_text(f'[polymarket]\nprivate_key = "{KEY}"\n')
        (directory / "secrets.toml").chmod(0o600)
        port = free_port()
        server = RunningProcess(
            nats_server_spec(
                store_dir=directory / "js", port=port, monitor_port=free_port(),
                log_file=directory / "nats.log",
            )
        )  # fmt: skip
        url = f"nats://127.0.0.1:{port}"
        settings = SimSettings(
            port=0, seed=5, binary_markets=2, neg_risk_events=0, flow=False,
            connect_bus=False, starting_collateral=10**9, rate_limit_tier="elite",
        )  # fmt: skip
        try:
            async with Simulator(settings) as sim:
                live = (
                    f'mode = "live"\nclob_url = "{sim.http_url}"\n'
                    f'user_ws_url = "{sim.user_ws_url}"\n'
                )
                latencies, _ = await _executor_round(
                    url, directory, sim, "live", live, live_intents, live=True
                )
                _, paper_seconds = await _executor_round(
                    url, directory, sim, "paper", "", paper_intents, live=False
                )
            hops = await _request_reply(url, 2000)
        finally:
            server.stop()
    print(f"intent -> accepted by the simulator (live, signed), {live_intents} one at a time:")
    print(f"  {_percentiles(latencies)}")
    print(f"paper intents sustained: {paper_intents / paper_seconds:,.0f} intents/s")
    print(f"bare NATS request/reply hop (2000): {_percentiles(hops)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live-intents", type=int, default=300)
    parser.add_argument("--paper-intents", type=int, default=3000)
    arguments = parser.parse_args()
    configure_logging("warning")
    asyncio.run(main(arguments.live_intents, arguments.paper_intents))
