"""Figures from the services' own ``/metrics`` endpoints, for ``polybus status``.

Each heartbeat's detail starts with ``metrics <url>`` (the runtime's HTTP server); status reads
every live instance's endpoint once, briefly, and sums up what an operator asks first: the
timings (p50/p99 of every ``*_seconds`` histogram), reconnects, resyncs, book states and the
venue's rate-limit refusals. A service that does not answer in time is simply left out.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

SCRAPE_TIMEOUT_S = 1.0


class Timing(msgspec.Struct, kw_only=True):
    """One histogram of one instance: how many observations, and two quantiles in ms."""

    service: str
    metric: str
    labels: str
    count: int
    p50_ms: float
    p99_ms: float


class Scraped(msgspec.Struct, kw_only=True):
    timings: list[Timing] = msgspec.field(default_factory=list)
    reconnects: dict[str, int] = msgspec.field(default_factory=dict)
    """Per service: socket and NATS reconnects since it started."""
    resyncs: int = 0
    assets_by_state: dict[str, int] = msgspec.field(default_factory=dict)
    """The ingests' followed assets by book state."""
    rate_limited: int = 0
    """Requests the venue answered with 429 or a rate-limit refusal (executor counters)."""


def metrics_url(detail: str) -> str:
    """The ``/metrics`` URL in a heartbeat's detail (``metrics http://host:port; …``)."""
    first = detail.split("; ", 1)[0]
    return first.removeprefix("metrics ") + "/metrics" if first.startswith("metrics http") else ""


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile of cumulative (upper bound, count) buckets, interpolated linearly
    inside the bucket it falls in (Prometheus's ``histogram_quantile``)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return 0.0
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def summarise(service: str, text: str, into: Scraped) -> None:
    """Add one instance's exposition ``text`` to ``into``."""
    for family in text_string_to_metric_families(text):
        name = family.name
        if family.type == "histogram" and name.endswith("_seconds"):
            _add_histograms(service, family.samples, into)
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            value = int(sample.value)
            if "reconnects" in name:
                into.reconnects[service] = into.reconnects.get(service, 0) + value
            elif name == "polybus_ingest_resyncs":
                into.resyncs += value
            elif name == "polybus_ingest_assets":
                state = sample.labels.get("state", "")
                into.assets_by_state[state] = into.assets_by_state.get(state, 0) + value
            elif "rate_limit" in name or sample.labels.get("reason") == "rate_limited":
                into.rate_limited += value


def _add_histograms(service: str, samples: list[Sample], into: Scraped) -> None:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for sample in samples:
        if not sample.name.endswith("_bucket"):
            continue
        labels = dict(sample.labels)
        bound = float(labels.pop("le"))
        key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        series[f"{sample.name.removesuffix('_bucket')}|{key}"].append((bound, sample.value))
    for key, buckets in sorted(series.items()):
        buckets.sort()
        count = int(buckets[-1][1])
        if count == 0:
            continue
        metric, label_text = key.split("|", 1)
        into.timings.append(
            Timing(
                service=service,
                metric=metric,
                labels=label_text,
                count=count,
                p50_ms=round(quantile(buckets, 0.5) * 1000, 3),
                p99_ms=round(quantile(buckets, 0.99) * 1000, 3),
            )
        )


async def scrape(endpoints: list[tuple[str, str]]) -> Scraped:
    """Read each ``(service, metrics URL)`` at the same time, each for at most a second."""
    scraped = Scraped()
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def fetch(url: str) -> str:
            try:
                async with session.get(url) as response:
                    return await response.text() if response.status == 200 else ""
            except (aiohttp.ClientError, TimeoutError):
                return ""

        texts = await asyncio.gather(*(fetch(url) for _, url in endpoints))
    for (service, _), text in zip(endpoints, texts, strict=True):
        if text:
            summarise(service, text, scraped)
    return scraped
