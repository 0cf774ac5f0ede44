"""The terminal rendering of ``polybus status`` and ``polybus top`` (rich)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from polybus.common.money import format_micros
from polybus.common.operator.activity import AssetActivity
from polybus.common.status import Status


def render_status(result: Status) -> Group:
    """Servers, services, streams, then the trading figures, then healthy or why not."""
    parts: list[RenderableType] = []
    for label, server in (("NATS", result.nats), ("PostgreSQL", result.postgres)):
        state = "[green]reachable[/]" if server.reachable else f"[red]unreachable[/] {server.error}"
        parts.append(Text.from_markup(f"{label:<11} {server.url}  {state}"))
    services = Table(
        "service", "instance", "version", "status", "heartbeat age (s)", "detail", title="services"
    )
    for service in result.services:
        colour = "green" if service.healthy else "red"
        services.add_row(
            service.service,
            service.instance,
            service.version,
            f"[{colour}]{service.status}[/]",
            f"{service.last_heartbeat_age_s:.1f}",
            service.detail,
        )
    parts.append(services)
    streams = Table(
        "stream", "messages", "bytes", "consumer", "lag", "redelivered", title="streams"
    )
    for stream in result.streams:
        streams.add_row(stream.name, str(stream.messages), str(stream.bytes), "", "", "")
        for consumer in stream.consumers:
            streams.add_row("", "", "", consumer.name, str(consumer.lag), str(consumer.redelivered))
    parts.append(streams)
    parts.extend(_feed(result))
    parts.extend(_trading(result))
    parts.extend(
        Text.from_markup(f"[red]{service.service} {service.instance} {service.status}:[/] ")
        + Text(service.reason)
        for service in result.services
        if service.reason
    )
    parts.append(Text.from_markup("[green]healthy[/]" if result.healthy else "[red]unhealthy[/]"))
    return Group(*parts)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key or '-'} {value}" for key, value in counts.items()) or "none"


def _feed(result: Status) -> list[RenderableType]:
    metrics, trading = result.metrics, result.trading
    lines: list[RenderableType] = [
        Text(f"books        {_counts(trading.books_by_state)}"),
        Text(f"resyncs      {metrics.resyncs} (ratio {result.resync_ratio:g} per asset)"),
        Text(f"reconnects   {_counts(metrics.reconnects)}"),
        Text(f"rate limited {metrics.rate_limited}"),
    ]
    if metrics.timings:
        timings = Table("service", "timing", "labels", "count", "p50 ms", "p99 ms", title="timings")
        for timing in metrics.timings:
            timings.add_row(
                timing.service,
                timing.metric,
                timing.labels,
                str(timing.count),
                f"{timing.p50_ms:g}",
                f"{timing.p99_ms:g}",
            )
        lines.append(timings)
    return lines


def _trading(result: Status) -> list[RenderableType]:
    trading = result.trading
    window = f"last {trading.window_s / 60:g} min"
    halted = [state.strategy_id or "all" for state in trading.halts if state.halted]
    lines: list[RenderableType] = [
        Text(f"halt         {'HALTED: ' + ', '.join(halted) if halted else 'trading'}"),
        Text(f"rejects      {_counts(trading.rejects_by_reason)} ({window})"),
        Text(f"risk events  {_counts(trading.risk_events_by_limit)} ({window})"),
    ]
    if trading.leases:
        leases = Table("group", "holder", "partitions", title="leases")
        for owner in trading.leases:
            leases.add_row(owner.group, owner.holder, ",".join(map(str, owner.partitions)))
        lines.append(leases)
    if trading.positions:
        positions = Table(
            "strategy", "market", "size", "avg", "realized", "unrealized", title="positions"
        )
        for row in trading.positions:
            positions.add_row(
                row.strategy_id,
                row.market,
                format_micros(row.size),
                format_micros(row.average_price),
                format_micros(row.realized_pnl),
                format_micros(row.unrealized_pnl),
            )
        for total in trading.pnl:
            positions.add_row(
                f"[bold]{total.strategy_id}[/]",
                "total",
                "",
                "",
                format_micros(total.realized_pnl),
                format_micros(total.unrealized_pnl),
            )
        lines.append(positions)
    return lines


def render_top(rows: list[AssetActivity], window_s: float) -> Table:
    table = Table(
        "asset",
        "market",
        "state",
        "resyncs",
        "stale",
        "not live (s)",
        "rejects",
        title=f"most troubled assets, last {window_s / 60:g} min",
    )
    for row in rows:
        table.add_row(
            row.asset_id[:16],
            row.market,
            row.state,
            str(row.resyncs),
            str(row.stale_transitions),
            f"{row.not_live_s:.1f}",
            str(row.rejects),
        )
    return table
