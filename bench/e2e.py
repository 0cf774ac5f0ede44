"""The whole pipeline measured end to end (DESIGN §9), as a user runs it: ``polybus up``.

    uv run python -m bench.e2e [--assets 5000] [--seconds 30] [--json FILE]

``polybus up --live`` runs every service as its own process, with nats-server and PostgreSQL
from the wheels: the simulator (Gamma, CLOB REST, the user channel, and the orders: the executor
trades *live* against it, signing included), the ingest following every simulated asset, the
recorder, the executor, and ``spread_capture`` quoting ``--quoted-markets`` markets with its
default settings. The market channel comes from ``bench/feed.py``: the simulator's own flow,
generated beforehand for the same universe, so the simulator's generation is never the limit.
Two sections of one flow:

1. *paced*: ``--rate`` level changes a second over all the assets for ``--seconds``: the first
   half steady, the second with a 10x burst of 0.5 s every 5 s. Latency per hop from the events'
   own timestamps - ``ts_init`` of a ``BookDelta`` is when the ingest received its frame, of an
   ``OrderIntent`` when the strategy made it, of an ``OrderEvent`` when the executor stored it -
   from when nats-server stored each delta in MD (its own clock: "on the bus", with no observer
   in between) and from when an observer (``bench/tap.py``) was delivered each intent. An intent
   is matched to the last book event of its market on the bus before it was made: the
   strategy's timer is off, so every intent comes from a book event.
2. *flood*: the rest of the flow as fast as the ingest takes it: events/s through the ingest,
   recorder rows/s, consumer lag, CPU and RSS per service process.

Beside the hops their floors, measured in the same run: a bare nats-py publish -> subscribe hop
on the same server, a bare ``msgspec`` decode of the same venue frames and bus messages, and a
bare HTTP GET of the simulator. Prints a table; writes ``bench/results/<date>.json`` (and
``--json FILE``). Stops by itself and stops everything it started (also on Ctrl-C or SIGTERM);
loopback only; a benchmark, not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import msgspec
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from bench.tap import Observed
from polybus.common.bus.nats_bus import NatsBus
from polybus.common.events import (
    BookDelta,
    BookSnapshot,
    OrderEvent,
    OrderIntent,
    execution_decoder,
    intent_decoder,
    market_data_decoder,
)
from polybus.common.infra import free_port
from polybus.common.operator.scrape import quantile
from polybus.common.subjects import Subjects
from tests.helpers import eventually, healthy_status, stop

REPO = Path(__file__).resolve().parents[1]
KEY = "0x" + "e2" * 32
"""Any key: the simulator takes every signer (docs/simulator.md)."""
STRATEGY = "spread_capture"
PARTITIONS = 16
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SERVICES = ("supervisor", "sim", "ingest", "recorder", "executor", STRATEGY)
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""One /metrics page: (sample name, sorted labels) -> value."""


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """Count and nearest-rank p50/p99/p99.9 in ms (with few samples p99.9 is the maximum)."""
    ordered = sorted(samples_ns)
    if not ordered:
        return {"count": 0}
    last = len(ordered) - 1
    figures: dict[str, float] = {"count": len(ordered)}
    for name, q in QUANTILES:
        figures[name] = round(ordered[min(last, int(len(ordered) * q))] / 1e6, 3)
    return figures


# -- the system ----------------------------------------------------------------------------------
@dataclass
class Ports:
    nats: int = field(default_factory=free_port)
    nats_monitor: int = field(default_factory=free_port)
    postgres: int = field(default_factory=free_port)
    feed: int = field(default_factory=free_port)
    sim: int = field(default_factory=free_port)
    metrics: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in SERVICES})


def write_config(workdir: Path, ports: Ports, assets: int, seed: int, quoted: list[str]) -> Path:
    """config/sim.toml's system on free ports, with the executor live against the simulator,
    the market channel from the feed and spread_capture on ``quoted``."""
    secrets = workdir / "secrets.toml"
    secrets.write_text(f'[polymarket]\nprivate_key = "{KEY}"\n')
    secrets.chmod(0o600)
    sim, metrics = f"127.0.0.1:{ports.sim}", ports.metrics
    config = workdir / "polybus.toml"
    config.write_text(
        f"""venue = "sim"
secrets_file = "secrets.toml"
[bus]
partitions = {PARTITIONS}
[embedded]
var_dir = "{workdir / "var"}"
nats_port = {ports.nats}
nats_monitor_port = {ports.nats_monitor}
postgres_port = {ports.postgres}
[log]
level = "warning"
format = "json"
[supervisor]
metrics_port = {metrics["supervisor"]}
[sim]
port = {ports.sim}
metrics_port = {metrics["sim"]}
seed = {seed}
binary_markets = {assets // 2}
neg_risk_events = 0
# The market channel is the feed's; the simulator's books stay the capture's first ones.
flow = false
[ingest]
market_ws_url = "ws://127.0.0.1:{ports.feed}/ws/market"
clob_url = "http://{sim}"
gamma_url = "http://{sim}"
discover_top_n = {assets}
metrics_port = {metrics["ingest"]}
# The feed is silent between its sections: not a stalled socket.
stall_timeout_s = 600
[recorder]
metrics_port = {metrics["recorder"]}
[executor]
mode = "live"
clob_url = "http://{sim}"
user_ws_url = "ws://{sim}/ws/user"
metrics_port = {metrics["executor"]}
[executor.risk.strategy]
# The quotes follow the feed's books, which drift from the simulator's (its flow is off): the
# post-only quotes that would cross there are refused, which the default reject breaker would
# take for a broken strategy; the other limits are sized for a small paper account.
max_position_market_shares = "unlimited"
max_position_market_notional = "unlimited"
max_position_total_shares = "unlimited"
max_position_total_notional = "unlimited"
max_order_notional = "unlimited"
max_notional_per_minute = "unlimited"
max_open_orders = 100000
reject_burst_count = 1000000
daily_loss_stop = "unlimited"
[strategy]
# Off: every intent then comes from a book event (that is how they are matched).
timer_interval_s = 86400
[strategy.{STRATEGY}]
metrics_port = {metrics[STRATEGY]}
markets = [{", ".join(f'"{market}"' for market in quoted)}]
"""
    )
    return config


class Child:
    """A helper process driven one line at a time (``KIND [json]`` answers)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *argv: str) -> Child:
        # Its own session: Ctrl-C reaches only this process, which stops the helpers itself.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *argv, cwd=REPO, start_new_session=True, limit=1 << 24,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def answer(self, expected: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = (await self.process.stdout.readline()).decode()
        kind, _, payload = line.strip().partition(" ")
        if kind != expected:
            raise RuntimeError(f"{self.process.pid} said {line.strip()[:200]!r}, not {expected}")
        result: dict[str, Any] = json.loads(payload) if payload else {}
        return result

    async def ask(self, command: str, expected: str = "") -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()
        return await self.answer(expected or command)

    async def close(self) -> None:
        if self.process.returncode is not None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def start_up(config: Path, workdir: Path) -> asyncio.subprocess.Process:
    """``polybus up --live`` in its own session: it stops when told, services first."""
    with (workdir / "up.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "polybus.common.cli", "up", "--live", "--config", str(config),
            cwd=workdir, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip


async def scrape(session: aiohttp.ClientSession, ports: dict[str, int]) -> dict[str, Series]:
    """Every service's /metrics, parsed (an endpoint that does not answer is left out)."""

    async def one(port: int) -> Series:
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    pages = await asyncio.gather(*(one(port) for port in ports.values()))
    return dict(zip(ports, pages, strict=True))


async def wait_until_ready(config: Path, workdir: Path, ports: Ports, assets: int) -> None:
    """Every book live at the ingest, every partition held by the strategy, all healthy."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def ready() -> bool:
            pages = await scrape(session, ports.metrics)
            live = pages["ingest"].get(("polybus_ingest_assets", (("state", "live"),)), 0)
            held = Snapshot.sum(pages[STRATEGY], "polybus_strategy_partitions_held")
            return live >= assets and held >= PARTITIONS

        await eventually(ready, 600, f"{assets} live books and {PARTITIONS} partitions held", 1)
    await healthy_status(config, workdir, frozenset(SERVICES[:-1]))


# -- what is sampled every second ---------------------------------------------------------------
@dataclass
class Snapshot:
    """One moment: each service's metrics, CPU ticks and RSS per process group, consumer lag."""

    at_ns: int
    metrics: dict[str, Series]
    cpu_ticks: dict[str, dict[int, int]]
    """Per group, per pid."""
    rss_kb: dict[str, int]
    lag: dict[str, int]
    md_messages: int

    @staticmethod
    def sum(series: Series, name: str, **labels: str) -> float:
        """``name`` summed over the series whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, key), v in series.items() if n == name and wanted <= set(key))

    def total(self, service: str, name: str, **labels: str) -> float:
        return self.sum(self.metrics.get(service, {}), name, **labels)


def _proc_table() -> dict[int, tuple[int, str, list[str]]]:
    """pid -> (parent pid, comm, argv) of every readable process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        table[int(entry)] = (parent, comm, [a.decode(errors="replace") for a in argv if a])
    return table


def service_name(comm: str, argv: list[str]) -> str:
    """The supervisor's name for a process: ``ingest``, ``strategy-spread_capture-0``, ..."""
    if argv[1:3] == ["-m", "polybus.common.cli"] and len(argv) > 3:
        if argv[3] == "strategy" and "--name" in argv:
            replica = argv[argv.index("--replica") + 1] if "--replica" in argv else "0"
            return f"strategy-{argv[argv.index('--name') + 1]}-{replica}"
        return "supervisor" if argv[3] == "up" else argv[3]
    return "postgres" if comm.startswith("postgres") else comm


def process_groups(up_pid: int, helpers: dict[str, int]) -> dict[str, list[int]]:
    """``polybus up`` and every process under it by service (PostgreSQL's together), and the
    benchmark's own processes."""
    table = _proc_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _, _) in table.items():
        children[parent].append(pid)
    groups: dict[str, list[int]] = {name: [pid] for name, pid in helpers.items()}
    stack = [up_pid]
    while stack:
        pid = stack.pop()
        if pid in table:
            groups.setdefault(service_name(*table[pid][1:]), []).append(pid)
        stack.extend(children.get(pid, ()))
    return groups


def cpu_and_rss(
    groups: dict[str, list[int]],
) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
    """utime + stime (clock ticks) per process and VmRSS (kB) per group, from /proc."""
    cpu: dict[str, dict[int, int]] = defaultdict(dict)
    rss: dict[str, int] = defaultdict(int)
    for name, pids in groups.items():
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # it just exited
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu[name][pid] = int(fields[11]) + int(fields[12])
            rss[name] += next(
                (int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:"), 0
            )
    return dict(cpu), dict(rss)


class Sampler:
    """A :class:`Snapshot` every second while it runs."""

    def __init__(self, bus: NatsBus, ports: Ports, up_pid: int, helpers: dict[str, int]) -> None:
        self.bus = bus
        self.ports = ports
        self.up_pid = up_pid
        self.helpers = helpers
        self.snapshots: list[Snapshot] = []
        self.lost = 0
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def take(self) -> Snapshot | None:
        try:
            pages = await scrape(self.session, self.ports.metrics)
            lag: dict[str, int] = {}
            md_messages = 0
            for info in await self.bus.js.streams_info():
                name = info.config.name or ""
                md_messages = info.state.messages if name == "MD" else md_messages
                for consumer in (
                    [] if name.startswith("KV_") else await self.bus.js.consumers_info(name)
                ):
                    if consumer.config.durable_name:
                        pending = (consumer.num_pending or 0) + (consumer.num_ack_pending or 0)
                        lag[f"{name}/{consumer.name}"] = pending
        except (nats.errors.Error, OSError) as error:
            # A JetStream API call timing out on a saturated server loses a sample, not the run.
            self.lost += 1
            print(f"# sample lost: {error!r}", flush=True)
            return None
        cpu, rss = cpu_and_rss(process_groups(self.up_pid, self.helpers))
        snapshot = Snapshot(time.time_ns(), pages, cpu, rss, lag, md_messages)
        self.snapshots.append(snapshot)
        return snapshot

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await self.take()
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

    async def until(self, done: Callable[[Snapshot], bool], timeout_s: float) -> int | None:
        """When the first snapshot from now on for which ``done`` holds was taken (None: not
        within ``timeout_s``)."""
        seen = len(self.snapshots)
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            for snapshot in self.snapshots[seen:]:
                if done(snapshot):
                    return snapshot.at_ns
            seen = len(self.snapshots)
            await asyncio.sleep(0.5)
        return None


def _published_all(snapshot: Snapshot) -> bool:
    backlog = snapshot.metrics.get("ingest", {}).get(("polybus_ingest_publish_backlog", ()))
    return backlog == 0


def _recorded_all(snapshot: Snapshot) -> bool:
    return snapshot.lag.get("MD/recorder") == 0


def increase(inside: list[Snapshot], service: str, value: Callable[[Series], float]) -> float:
    """How much a counter grew over the snapshots, across restarts of its process (a drop is a
    reset: the new process counts from zero), as Prometheus's ``increase`` does. A snapshot
    without the service's page (it did not answer) is skipped."""
    total, previous = 0.0, None
    for snapshot in inside:
        page = snapshot.metrics.get(service)
        if not page:
            continue
        current = value(page)
        if previous is not None:
            total += current - previous if current >= previous else current
        previous = current
    return total


def section_figures(sampler: Sampler, start_ns: int, end_ns: int) -> dict[str, Any]:
    """Rates, lag, CPU and RSS over the snapshots inside [start, end] (at least two)."""
    inside = [s for s in sampler.snapshots if start_ns <= s.at_ns <= end_ns]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]
    seconds = (last.at_ns - first.at_ns) / 1e9

    def grew(service: str, name: str, **labels: str) -> float:
        return increase(inside, service, lambda page: Snapshot.sum(page, name, **labels))

    def per_second(service: str, name: str, **labels: str) -> float:
        return round(grew(service, name, **labels) / seconds, 1)

    def by_label(service: str, name: str, label: str, rate: bool = True) -> dict[str, float]:
        series = last.metrics.get(service, {})
        values = sorted({dict(key).get(label, "") for (n, key) in series if n == name} - {""})
        if rate:
            return {value: per_second(service, name, **{label: value}) for value in values}
        return {value: grew(service, name, **{label: value}) for value in values}

    restarts = by_label("supervisor", "polybus_supervisor_restarts_total", "child", rate=False)
    return {
        "seconds": round(seconds, 1),
        "ingest": {
            "data frames/s": per_second("ingest", "polybus_ingest_frames_total", kind="data"),
            "venue events/s": by_label("ingest", "polybus_ingest_venue_events_total", "type"),
            "events published/s": by_label("ingest", "polybus_ingest_published_total", "type"),
            "events into the MD stream/s": round(
                (last.md_messages - first.md_messages) / seconds, 1
            ),
            "batch checks failed": grew(
                "ingest", "polybus_ingest_batch_checks_total", result="fail"
            ),
            "resyncs": grew("ingest", "polybus_ingest_resyncs_total"),
            "assets by state at the end": by_state(last),
            "publish backlog max": max(
                s.total("ingest", "polybus_ingest_publish_backlog") for s in inside
            ),
        },
        "recorder rows/s": per_second("recorder", "polybus_recorder_rows_written_total"),
        "strategy intents/s": per_second(STRATEGY, "polybus_strategy_intents_total"),
        "executor order events/s": by_label("executor", "polybus_executor_orders_total", "status"),
        "restarts": {child: count for child, count in restarts.items() if count},
        "consumer lag max": {name: max(s.lag.get(name, 0) for s in inside) for name in last.lag},
        "consumer lag at the end": last.lag,
        "cpu % of one core": {
            # Per process: one that (re)started inside the window counts from zero.
            name: round(
                100
                * sum(t - first.cpu_ticks.get(name, {}).get(pid, 0) for pid, t in pids.items())
                / TICKS_PER_S
                / seconds,
                1,
            )
            for name, pids in last.cpu_ticks.items()
        },
        "rss max MB": {
            name: round(max(s.rss_kb.get(name, 0) for s in inside) / 1024, 1)
            for name in last.rss_kb
        },
        "histograms ms": {
            f"{service} {metric}": histogram_ms(inside, service, metric)
            for service, metric in (
                ("executor", "polybus_executor_ack_seconds"),
                ("recorder", "polybus_recorder_flush_seconds"),
            )
        },
    }


def by_state(snapshot: Snapshot) -> dict[str, int]:
    return {
        dict(key)["state"]: int(value)
        for (name, key), value in snapshot.metrics.get("ingest", {}).items()
        if name == "polybus_ingest_assets" and value
    }


def histogram_ms(inside: list[Snapshot], service: str, metric: str) -> dict[str, float]:
    """A service's ``*_seconds`` histogram over the window, every label set together."""
    bounds = {
        dict(key)["le"]
        for (name, key) in inside[-1].metrics.get(service, {})
        if name == f"{metric}_bucket"
    }

    def bucket(bound: str) -> Callable[[Series], float]:
        return lambda page: sum(
            value
            for (name, key), value in page.items()
            if name == f"{metric}_bucket" and dict(key)["le"] == bound
        )

    ordered = sorted((float(b), increase(inside, service, bucket(b))) for b in bounds)
    if not ordered or ordered[-1][1] <= 0:
        return {"count": 0}
    quantiles = {name: round(quantile(ordered, q) * 1000, 3) for name, q in QUANTILES}
    return {"count": int(ordered[-1][1]), **quantiles}


# -- the chains ---------------------------------------------------------------------------------
HOPS = (
    ("venue_to_ingest", "frame sent by the venue -> received by the ingest"),
    ("ingest", "frame received -> BookDelta on the bus (stored)"),
    ("strategy", "BookDelta on the bus -> intent made"),
    ("intent_publish", "intent made -> intent delivered"),
    ("executor", "intent delivered -> order submitted (stored)"),
    ("venue", "submitted -> simulator's answer (signed, HTTP)"),
    ("frame_to_intent_made", "frame received -> intent made"),
    ("frame_to_intent", "frame received -> intent delivered"),
    ("intent_to_ack", "intent delivered -> simulator's answer"),
    ("end_to_end", "frame received -> order acknowledged (place)"),
    ("sent_to_ack", "frame sent -> order acknowledged (place)"),
    ("cancel_end_to_end", "frame received -> cancel acknowledged"),
)
PHASES = ("steady", "bursts")


async def stored_book_events(bus: NatsBus, start_ns: int, last_ms: int) -> list[tuple[int, bytes]]:
    """(time nats-server stored it, payload) of every delta and snapshot in MD from ``start_ns``
    on, until the first one of a venue batch after ``last_ms``: "on the bus" as the server saw
    it, with no observer's own delays."""
    subjects = Subjects()
    subscription = await bus.js.pull_subscribe(
        "",
        stream="MD",
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.datetime.fromtimestamp(start_ns / 1e9, datetime.UTC),
            ack_policy=AckPolicy.NONE,
            filter_subjects=[subjects.market_data_kind(k) for k in ("delta", "book")],
            inactive_threshold=60.0,
        ),
    )
    stored: list[tuple[int, bytes]] = []
    try:
        while True:
            try:
                batch = await subscription.fetch(2000, timeout=5)
            except nats.errors.TimeoutError:
                return stored  # the stream's end
            for msg in batch:
                event = market_data_decoder.decode(msg.data)
                if isinstance(event, BookDelta) and event.ts_event // 1_000_000 > last_ms:
                    return stored
                stored.append((round(msg.metadata.timestamp.timestamp() * 1e9), msg.data))
    finally:
        await subscription.unsubscribe()


@dataclass
class Orders:
    """What the executor published, by order id."""

    submitted: dict[str, int] = field(default_factory=dict)
    answered: dict[str, OrderEvent] = field(default_factory=dict)
    canceled: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, execution: list[tuple[int, bytes]]) -> Orders:
        orders = cls()
        for _, data in execution:
            event = execution_decoder.decode(data)
            if not isinstance(event, OrderEvent):
                continue
            if event.status == "submitted":
                orders.submitted.setdefault(event.order_id, event.ts_init)
            elif event.status in ("accepted", "rejected", "unknown"):
                orders.answered.setdefault(event.order_id, event)
            elif event.status == "canceled":
                orders.canceled.setdefault(event.order_id, event.ts_init)
        return orders


@dataclass
class Chains:
    """The paced section's samples (ns) per phase and hop, and what could not be followed.

    A venue batch is known by its timestamp (ms, the ``ts_event`` of the events made of it):
    ``sent`` says when the feed sent each batch of the paced section, and the ones from
    ``bursts_from_ms`` on belong to the half with bursts."""

    sent: dict[int, int]
    bursts_from_ms: int
    hops: dict[str, dict[str, list[int]]] = field(
        default_factory=lambda: {phase: defaultdict(list) for phase in PHASES}
    )
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    delta_payloads: list[bytes] = field(default_factory=list)

    def phase(self, venue_ms: int) -> dict[str, list[int]]:
        return self.hops["steady" if venue_ms < self.bursts_from_ms else "bursts"]

    def delta(self, event: BookDelta, on_bus_ns: int, data: bytes) -> None:
        venue_ms = event.ts_event // 1_000_000
        sent = self.sent.get(venue_ms)
        if sent is None:
            return  # not of the paced section
        hops = self.phase(venue_ms)
        hops["venue_to_ingest"].append(event.ts_init - sent)
        hops["ingest"].append(on_bus_ns - event.ts_init)
        self.delta_payloads.append(data)

    def follow(self, intent: OrderIntent, delivered_ns: int, cause: Cause, orders: Orders) -> None:
        """One intent, from the venue batch that caused it to the simulator's answer."""
        sent = self.sent.get(cause.venue_ms)
        if sent is None:
            self.counts["intents caused by an event outside the paced section"] += 1
            return
        self.counts[f"intents ({intent.action})"] += 1
        frame_ns = cause.received_ns
        hops = self.phase(cause.venue_ms)
        hops["strategy"].append(intent.ts_init - cause.on_bus_ns)
        hops["intent_publish"].append(delivered_ns - intent.ts_init)
        hops["frame_to_intent_made"].append(intent.ts_init - frame_ns)
        hops["frame_to_intent"].append(delivered_ns - frame_ns)
        if intent.action == "cancel":
            canceled = orders.canceled.get(intent.target_intent_id)
            if canceled is not None:
                hops["cancel_end_to_end"].append(canceled - frame_ns)
            return
        answer = orders.answered.get(intent.intent_id)
        if answer is None:
            self.counts["places not answered by the end"] += 1
            return
        reason = f" ({answer.reason})" if answer.status == "rejected" else ""
        self.counts[f"places {answer.status}{reason}"] += 1
        submitted = orders.submitted.get(intent.intent_id)
        if submitted is None:
            return  # refused by the executor itself: it never went to the venue
        hops["executor"].append(submitted - delivered_ns)
        hops["venue"].append(answer.ts_init - submitted)
        hops["intent_to_ack"].append(answer.ts_init - delivered_ns)
        hops["end_to_end"].append(answer.ts_init - frame_ns)
        hops["sent_to_ack"].append(answer.ts_init - sent)


class Cause(NamedTuple):
    """A book event an intent may have come from: when it was on the bus, when the ingest
    received its frame, its venue batch."""

    on_bus_ns: int
    received_ns: int
    venue_ms: int


def chains(book: list[tuple[int, bytes]], observed: Observed, paced: dict[str, Any]) -> Chains:
    """Each intent matched to the last book event of its market on the bus before it was made
    (what the strategy could have reacted to), then to the executor's ``submitted`` and the
    venue's answer of its order id; those caused by the paced section's batches are kept."""
    out = Chains(dict(map(tuple, paced["sent"])), paced["bursts_from_ms"])
    causes: dict[str, list[Cause]] = defaultdict(list)
    for on_bus_ns, data in book:
        event = market_data_decoder.decode(data)
        if isinstance(event, BookDelta | BookSnapshot):
            venue_ms = event.ts_event // 1_000_000
            causes[event.condition_id].append(Cause(on_bus_ns, event.ts_init, venue_ms))
            if isinstance(event, BookDelta):
                out.delta(event, on_bus_ns, data)
    for times in causes.values():
        times.sort()
    orders = Orders.of(observed.execution)
    for delivered_ns, data in observed.intents:
        intent = intent_decoder.decode(data)
        if not isinstance(intent, OrderIntent):
            continue
        times = causes.get(intent.condition_id, [])
        index = bisect.bisect_right(times, (intent.ts_init, 2**63, 0)) - 1
        if index < 0:
            out.counts["intents with no book event before them"] += 1
        else:
            out.follow(intent, delivered_ns, times[index], orders)
    return out


def bare_decode(messages: list[bytes]) -> list[int]:
    """The floor of decoding: a bare, untyped msgspec decode of each message (ns)."""
    decoder = msgspec.json.Decoder()
    samples = []
    for data in messages:
        started = time.perf_counter_ns()
        decoder.decode(data)
        samples.append(time.perf_counter_ns() - started)
    return samples


async def bare_http(url: str, until: asyncio.Event) -> list[int]:
    """The floor of the venue hop: a bare GET of the simulator's ``/ok``, every 50 ms."""
    samples: list[int] = []
    async with aiohttp.ClientSession() as session:
        while not until.is_set():
            started = time.time_ns()
            async with session.get(url) as response:
                await response.read()
            samples.append(time.time_ns() - started)
            await asyncio.sleep(0.05)
    return samples


# -- the run --------------------------------------------------------------------------------------
async def measure(arguments: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ports = Ports()
    began = time.perf_counter()
    feed = await Child.start(
        "bench.feed", "--workdir", str(workdir), "--port", str(ports.feed),
        "--assets", str(arguments.assets), "--seed", str(arguments.seed),
        "--rate", str(arguments.rate), "--seconds", str(arguments.seconds),
        "--flood-changes", str(arguments.flood_changes),
    )  # fmt: skip
    up: asyncio.subprocess.Process | None = None
    tap: Child | None = None
    try:
        print("# generating the flow ...", flush=True)
        ready = await feed.answer("READY")
        quotable = [market for market, spread in ready.pop("markets") if spread >= 3]
        quoted = quotable[:: max(1, len(quotable) // arguments.quoted_markets)]
        quoted = quoted[: arguments.quoted_markets]
        config = write_config(workdir, ports, arguments.assets, arguments.seed, quoted)
        print(f"# flow ready ({time.perf_counter() - began:.0f} s); polybus up", flush=True)
        up = await start_up(config, workdir)
        await wait_until_ready(config, workdir, ports, arguments.assets)
        tap = await Child.start(
            "bench.tap", f"nats://127.0.0.1:{ports.nats}", str(workdir / "tap.msgpack")
        )
        await tap.answer("READY")
        print(f"# system up ({time.perf_counter() - began:.0f} s); paced section", flush=True)
        results = await sections(ports, feed, tap, up, workdir)
        return {**results, "feed": ready, "quoted_markets": len(quoted)}
    finally:
        if tap is not None:
            await tap.close()
        if up is not None and up.returncode is None:
            await stop(up)
        await feed.close()


async def sections(
    ports: Ports, feed: Child, tap: Child, up: asyncio.subprocess.Process, workdir: Path
) -> dict[str, Any]:
    bus = await NatsBus.connect(f"nats://127.0.0.1:{ports.nats}", name="bench-e2e")
    helpers = {"feed": feed.process.pid, "tap": tap.process.pid, "bench": os.getpid()}
    sampler = Sampler(bus, ports, up.pid, helpers)
    sampling = asyncio.create_task(sampler.run())
    load = {"start": os.getloadavg()}
    try:
        done = asyncio.Event()
        http_floor = asyncio.create_task(bare_http(f"http://127.0.0.1:{ports.sim}/ok", done))
        paced = await feed.ask("PACED")
        await asyncio.sleep(2.0)  # the answers to the last intents
        done.set()
        await tap.ask("STOP", "DONE")
        load["paced"] = os.getloadavg()
        print("# flood section", flush=True)
        flood = await feed.ask("FLOOD")
        load["flood"] = os.getloadavg()
        published_ns = await sampler.until(_published_all, 600) or time.time_ns()
        recorded_ns = await sampler.until(_recorded_all, 600) or time.time_ns()
        frame_floor = (await feed.ask("DECODE"))["samples_ns"]
        last_paced_ms = max(venue_ms for venue_ms, _ in paced["sent"])
        book = await stored_book_events(bus, paced["start_ns"] - 5 * 10**9, last_paced_ms)
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        await sampler.session.close()
        await bus.drain()
    observed = msgspec.msgpack.decode((workdir / "tap.msgpack").read_bytes(), type=Observed)
    matched = chains(book, observed, paced)
    paced["sent"] = len(paced["sent"])  # batches; their times are in the figures
    return {
        "load_average": load,
        "paced": paced,
        "flood": flood,
        "latency_ms": {
            phase: {name: percentiles(matched.hops[phase].get(name, [])) for name, _ in HOPS}
            for phase in PHASES
        },
        "latency_counts": dict(matched.counts),
        "floors_ms": {
            "bare nats-py publish -> subscribe": percentiles(observed.floor),
            "bare msgspec decode of a venue frame as sent": percentiles(frame_floor),
            "bare msgspec decode of a BookDelta as published": percentiles(
                bare_decode(matched.delta_payloads)
            ),
            "bare HTTP GET of the simulator": percentiles(await http_floor),
        },
        "sections": {
            "paced": section_figures(sampler, paced["start_ns"], paced["end_ns"]),
            # From the flood's first second on (the ingest's warm-up) until the feed has sent it
            # all, until the ingest has published it all, until the recorder has written it.
            "flood: while sent": section_figures(
                sampler, flood["start_ns"] + 10**9, flood["end_ns"]
            ),
            "flood: until published": section_figures(sampler, flood["start_ns"], published_ns),
            "flood: until recorded": section_figures(sampler, flood["start_ns"], recorded_ns),
        },
        "samples lost": sampler.lost,
        "timeline": timeline(sampler.snapshots, paced["start_ns"]),
    }


def timeline(snapshots: list[Snapshot], origin_ns: int) -> list[dict[str, float]]:
    """A few figures of every snapshot (s from the paced section's start), to see a backlog
    build up and drain."""
    return [
        {
            "t_s": round((snapshot.at_ns - origin_ns) / 1e9, 1),
            "md_messages": snapshot.md_messages,
            "ingest_entries": snapshot.total(
                "ingest", "polybus_ingest_venue_events_total", type="price_change_entry"
            ),
            "ingest_backlog": snapshot.total("ingest", "polybus_ingest_publish_backlog"),
            "recorder_rows": snapshot.total("recorder", "polybus_recorder_rows_written_total"),
            "md_recorder_lag": snapshot.lag.get("MD/recorder", -1),
        }
        for snapshot in snapshots
    ]


def log_summary(log: Path) -> list[tuple[str, str, str, int]]:
    """The services' warnings and errors in ``up.log`` (JSON lines), by service and event."""
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    if not log.exists():
        return []
    with log.open("rb") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                counts[(entry.get("service", ""), entry.get("event", ""), entry["level"])] += 1
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return [(service, event, level, count) for (service, event, level), count in ordered]


# -- output ---------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    models = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return {
        "cpus": os.cpu_count(),
        "cpu": models[0] if models else platform.machine(),
        "memory_gb": round(memory_kb / 1024**2, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _floor_ms(results: dict[str, Any], hop: str) -> float | None:
    """The p50s of the bare operations a hop contains, added up (ms)."""
    floors = results["floors_ms"]
    nats_hop = floors["bare nats-py publish -> subscribe"].get("p50", 0.0)
    frame = floors["bare msgspec decode of a venue frame as sent"].get("p50", 0.0)
    delta = floors["bare msgspec decode of a BookDelta as published"].get("p50", 0.0)
    http = floors["bare HTTP GET of the simulator"].get("p50", 0.0)
    to_intent = frame + nats_hop + delta
    parts = {
        "ingest": frame + nats_hop,
        "strategy": delta,
        "intent_publish": 2 * nats_hop,  # the message, and the JetStream ack back
        "venue": http,
        "frame_to_intent_made": to_intent,
        "frame_to_intent": to_intent + 2 * nats_hop,
        "intent_to_ack": nats_hop + http,
        "end_to_end": to_intent + 3 * nats_hop + http,
        "cancel_end_to_end": to_intent + 3 * nats_hop + http,
    }
    return round(parts[hop], 3) if hop in parts else None


def _cells(figures: dict[str, float], floor: float | None = None) -> str:
    values = " ".join(f"{figures.get(name, float('nan')):>9.3f}" for name, _ in QUANTILES)
    floor_text = f"{floor:>9.3f}" if floor is not None else f"{'':>9}"
    return f"{values} {floor_text} {int(figures.get('count', 0)):>8}"


def report(results: dict[str, Any]) -> None:
    parameters, host = results["parameters"], results["machine"]
    print(
        f"\npolybus end to end: {parameters['assets']:,} assets; paced {parameters['rate']:,} "
        f"level changes/s for {parameters['seconds']:.0f} s (the second half with 10x bursts), "
        f"then a flood of {parameters['flood_changes']:,}; {host['cpus']} CPUs ({host['cpu']}), "
        f"{host['memory_gb']} GB"
    )
    load = results["load_average"]
    print(
        "load average (1, 5, 15 min): "
        + "; ".join(f"{k} {' '.join(f'{v:.2f}' for v in values)}" for k, values in load.items())
    )
    quantiles = " ".join(f"{name:>9}" for name, _ in QUANTILES)
    for phase, title in zip(PHASES, ("steady", "with 10x bursts"), strict=True):
        print(f"\n{'latency (ms), paced, ' + title:<52} {quantiles} {'floor':>9} {'samples':>8}")
        for name, label in HOPS:
            figures = results["latency_ms"][phase][name]
            print(f"{label:<52} {_cells(figures, _floor_ms(results, name))}")
    print(f"\n{'floors, same run (ms)':<52} {quantiles} {'':>9} {'samples':>8}")
    for label, figures in results["floors_ms"].items():
        print(f"{label:<52} {_cells(figures)}")
    sections = {name: figures for name, figures in results["sections"].items() if figures}
    print(
        f"\n{'throughput, per second':<42} {'seconds':>7} {'entries in':>10} {'into MD':>8} "
        f"{'rows':>8} {'intents':>7} {'backlog max':>11}"
    )
    for name, figures in sections.items():
        ingest = figures["ingest"]
        print(
            f"{name:<42} {figures['seconds']:>7.1f} "
            f"{ingest['venue events/s'].get('price_change_entry', 0):>10,.0f} "
            f"{ingest['events into the MD stream/s']:>8,.0f} {figures['recorder rows/s']:>8,.0f} "
            f"{figures['strategy intents/s']:>7,.1f} {ingest['publish backlog max']:>11,.0f}"
        )
    _report_processes(sections)
    print()
    for name, figures in sections.items():
        for metric, value in figures["histograms ms"].items():
            label = f"{name}: {metric.split(' ')[1]} (ms)"
            print(f"{label:<62} {_cells(value)}")
    paced, flood = results["paced"], results["flood"]
    failed = sum(figures["ingest"]["batch checks failed"] for figures in sections.values())
    resyncs = sum(figures["ingest"]["resyncs"] for figures in sections.values())
    books = list(sections.values())[-1]["ingest"]["assets by state at the end"]
    print(f"\nbatch checks failed {failed:.0f}, resyncs {resyncs:.0f}; books at the end {books}")
    restarts = {
        name: figures["restarts"] for name, figures in sections.items() if figures["restarts"]
    }
    print(f"restarts: {restarts or 'none'}")
    print(f"intents: {results['latency_counts']}")
    logged = results["warnings and errors logged"]
    print(f"warnings and errors logged ({len(logged)} kinds, the most frequent first):")
    for service, event, level, count in logged[:12]:
        print(f"  {count:>8,}  {service} {event} ({level})")
    print(
        f"sent: paced {paced['events']:,} events in {paced['frames']:,} frames, flood "
        f"{flood['events']:,} in {flood['frames']:,} frames; late subscriptions "
        f"{flood['late_subscribes']}; samples lost {results['samples lost']}"
    )


def _report_processes(sections: dict[str, dict[str, Any]]) -> None:
    """CPU % of a core and RSS max (MB) per process, and the consumers' lag, per window."""
    short = list(sections)
    print(f"\n{'CPU % of a core, RSS max MB':<28} " + " ".join(f"{n:>19}" for n in short))
    processes = sorted({p for figures in sections.values() for p in figures["cpu % of one core"]})
    for process in processes:
        cells = [
            f"{figures['cpu % of one core'].get(process, 0):>9.1f} "
            f"{figures['rss max MB'].get(process, 0):>9.1f}"
            for figures in sections.values()
        ]
        print(f"{process:<28} " + " ".join(cells))
    print(f"\n{'consumer lag, max':<28} " + " ".join(f"{n:>19}" for n in short))
    consumers = sorted({c for figures in sections.values() for c in figures["consumer lag max"]})
    for consumer in consumers:
        lags = [figures["consumer lag max"].get(consumer, 0) for figures in sections.values()]
        print(f"{consumer:<28} " + " ".join(f"{lag:>19,}" for lag in lags))


def _keep_logs(workdir: Path) -> Path:
    """The run's logs, kept outside the work directory (which goes, with the databases)."""
    kept = Path(tempfile.mkdtemp(prefix="polybus-bench-e2e-logs-"))
    for log in [*workdir.glob("*.log"), *(workdir / "var").glob("*.log")]:
        shutil.copy(log, kept / log.name)
    return kept


async def _stoppable(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run ``work``; SIGTERM cancels it as Ctrl-C does, so its cleanup runs either way."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=5000, help="even, at most 5000")
    parser.add_argument("--seconds", type=float, default=30.0, help="the paced section")
    parser.add_argument("--rate", type=int, default=1000, help="paced level changes/s")
    parser.add_argument("--flood-changes", type=int, help="default: 5,000 x --seconds")
    parser.add_argument("--quoted-markets", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the JSON summary here")
    arguments = parser.parse_args()
    if arguments.assets % 2 or not 2 <= arguments.assets <= 5000:
        parser.error("--assets must be even, from 2 to 5000")
    if arguments.seconds <= 0 or arguments.rate < 100 or arguments.quoted_markets < 1:
        parser.error("--seconds must be positive, --rate at least 100, --quoted-markets >= 1")
    if arguments.flood_changes is None:
        arguments.flood_changes = int(5_000 * arguments.seconds)
    workdir = Path(tempfile.mkdtemp(prefix="polybus-bench-e2e-"))
    workdir.chmod(0o755)  # PostgreSQL may run as another user (tests/conftest.py)
    try:
        measured = asyncio.run(_stoppable(measure(arguments, workdir)))
        measured["warnings and errors logged"] = log_summary(workdir / "up.log")
    except KeyboardInterrupt:
        raise SystemExit("interrupted: everything it started is stopped") from None
    except (AssertionError, RuntimeError, nats.errors.Error) as error:
        raise SystemExit(f"failed: {error!r}; the logs are in {_keep_logs(workdir)}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": vars(arguments) | {"json": str(arguments.json or "")},
        **measured,
    }
    report(results)
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    for path in [REPO / "bench" / "results" / f"{day}.json", *filter(None, [arguments.json])]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
