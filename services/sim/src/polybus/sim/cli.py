"""``polybus sim-fault``: switch a running simulator's faults from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer

from polybus.common.cli import fail

app = typer.Typer()


def _parse(assignments: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"{assignment!r} is not KEY=VALUE")
        try:
            body[key] = json.loads(value)
        except json.JSONDecodeError:
            body[key] = value
    return body


@app.command("sim-fault")
def sim_fault(
    name: Annotated[
        str,
        typer.Argument(
            help="stall, unstall, disconnect, drop_price_change, crossed_burst, inject_frame, "
            "tick_change, restart, post_only, cancel_only, trading_disabled, rate_limit, slow, "
            "fail_settlement, clear"
        ),
    ],
    url: Annotated[str, typer.Option(help="The simulator's HTTP URL.")] = "http://127.0.0.1:8080",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A fault parameter, KEY=VALUE (JSON values), repeatable."),
    ] = None,
) -> None:
    """Switch a fault on in a running simulator (POST /admin/faults/NAME); exits 1 if refused
    or when the simulator cannot be reached."""
    body = _parse(set_ or [])
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")

    async def post() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(f"{url.rstrip('/')}/admin/faults/{name}", json=body) as response,
        ):
            return response.status, await response.text()

    try:
        status, text = asyncio.run(post())
    except (aiohttp.ClientError, TimeoutError) as error:
        raise fail(
            f"cannot reach the simulator at {url}: {error or type(error).__name__}", 1
        ) from None
    typer.echo(text)
    raise typer.Exit(0 if status == 200 else 1)


@app.command("sim-capture")
def sim_capture(
    out: Annotated[Path, typer.Argument(help="The JSONL capture to write.", dir_okay=False)],
    seed: Annotated[int, typer.Option(help="The universe and flow seed.")] = 1,
    binary_markets: Annotated[int, typer.Option(min=0, max=2500, help="Binary markets.")] = 500,
    neg_risk_events: Annotated[
        int, typer.Option(min=0, max=500, help="Neg-risk events (4 outcomes).")
    ] = 0,
    batches: Annotated[int, typer.Option(min=0, help="Batches after the initial dump.")] = 1000,
    actions: Annotated[int, typer.Option(min=0, help="Flow actions per batch.")] = 200,
) -> None:
    """Write simulated market data to a capture (replay it with capture_file, pace max)."""
    from polybus.sim.capture import generate_capture
    from polybus.sim.config import SimSettings

    if not out.parent.is_dir():
        raise fail(f"cannot write {out}: directory {out.parent} does not exist", 2)
    if binary_markets + neg_risk_events == 0:
        raise fail("nothing to simulate: give --binary-markets or --neg-risk-events", 2)
    try:
        stats = generate_capture(
            out,
            SimSettings(seed=seed, binary_markets=binary_markets, neg_risk_events=neg_risk_events),
            batches=batches,
            actions_per_batch=actions,
        )
    except OSError as error:
        raise fail(f"cannot write {out}: {error.strerror or error}", 1) from None
    typer.echo(json.dumps(stats.__dict__))
