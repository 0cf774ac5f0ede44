"""``polybus db …``: migrate, prune and rebuild a book from the event store.

Exit codes: 0 success, 1 runtime failure (database unreachable, schema refused, no snapshot
before the time asked), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from polybus.common.cli import DEFAULT_CONFIG, ConfigOption, fail, load
from polybus.common.config import Config, redact_url
from polybus.common.events import encode
from polybus.common.money import format_micros
from polybus.recorder.maintenance import DEFAULT_PRUNE_TABLES, prune
from polybus.recorder.migrations import MigrationError, migrate_database
from polybus.recorder.snapshot import RebuiltBook, book_at
from polybus.recorder.store import connect
from polybus.recorder.timespec import parse_duration, parse_time

db_app = typer.Typer(help="The event store (PostgreSQL/TimescaleDB).", no_args_is_help=True)


def _unreachable(config: Config, error: BaseException) -> typer.Exit:
    # asyncpg's messages name host, port and user, never the password.
    return fail(f"database {redact_url(config.database_url())}: {error}", 1)


@db_app.command("migrate")
def migrate_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Apply pending schema migrations (idempotent). Refuses a database migrated by a newer
    polybus. The TimescaleDB migration is applied only where the extension is available."""
    loaded = load(config)
    try:
        report = asyncio.run(migrate_database(loaded))
    except MigrationError as error:
        raise fail(f"migrate refused: {error}", 1) from None
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        raise _unreachable(loaded, error) from None
    for line in report.describe():
        typer.echo(line)


@db_app.command("prune")
def prune_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of the rows to delete: 30d, 12h, 2w, …")
    ],
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            help="A table to prune (repeatable). Default: "
            + ", ".join(DEFAULT_PRUNE_TABLES)
            + ". Orders and fills are pruned only when named.",
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Delete recorded rows older than a duration (plain PostgreSQL; on TimescaleDB the
    retention policies do it, and this drops whole chunks)."""
    from datetime import UTC, datetime

    try:
        cutoff = datetime.now(UTC) - parse_duration(older_than)
    except ValueError as error:
        raise fail(str(error), 2) from None
    loaded = load(config)

    async def run() -> dict[str, int]:
        connection = await connect(loaded)
        try:
            return await prune(connection, cutoff, tuple(table or ()))
        finally:
            await connection.close()

    try:
        removed = asyncio.run(run())
    except ValueError as error:
        raise fail(str(error), 2) from None
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        raise _unreachable(loaded, error) from None
    for name, count in removed.items():
        typer.echo(f"{name}: {count} removed (older than {cutoff.isoformat()})")


def _print_book(rebuilt: RebuiltBook) -> None:
    console = Console()
    book = rebuilt.book
    console.print(
        f"asset {book.asset_id}  market {book.condition_id}\n"
        f"from snapshot {rebuilt.snapshot.event_id} (seq {rebuilt.snapshot.seq}) "
        f"+ {rebuilt.deltas_applied} deltas -> epoch {book.epoch} seq {book.seq}",
        highlight=False,
        soft_wrap=True,  # ids are long: never break one across lines
    )
    levels = Table("bid size", "bid", "ask", "ask size")
    for index in range(max(len(book.bids), len(book.asks))):
        bid = book.bids[index] if index < len(book.bids) else None
        ask = book.asks[index] if index < len(book.asks) else None
        levels.add_row(
            format_micros(bid.size) if bid else "",
            format_micros(bid.price) if bid else "",
            format_micros(ask.price) if ask else "",
            format_micros(ask.size) if ask else "",
        )
    console.print(levels)


@db_app.command("snapshot")
def snapshot_command(
    asset: Annotated[str, typer.Option("--asset", help="The asset (outcome token) id.")],
    at: Annotated[str, typer.Option("--at", help="ISO 8601 time (UTC if no offset).")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the rebuilt book as a BookSnapshot event.")
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Rebuild an asset's book at a point in time from the nearest earlier snapshot plus the
    deltas after it. Warns (and exits 1) when sequence numbers are missing from the store."""
    try:
        moment = parse_time(at)
    except ValueError as error:
        raise fail(str(error), 2) from None
    loaded = load(config)

    async def run() -> RebuiltBook | None:
        connection = await connect(loaded)
        try:
            return await book_at(connection, asset, moment)
        finally:
            await connection.close()

    try:
        rebuilt = asyncio.run(run())
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        raise _unreachable(loaded, error) from None
    if rebuilt is None:
        raise fail(f"no snapshot of asset {asset} recorded at or before {moment.isoformat()}", 1)
    if json_output:
        sys.stdout.write(encode(rebuilt.book).decode() + "\n")
    else:
        _print_book(rebuilt)
    if not rebuilt.complete:
        raise fail(
            f"warning: seq {', '.join(map(str, rebuilt.missing_seqs[:20]))} missing from the "
            "store: the book may be wrong",
            1,
        )


def commands() -> typer.Typer:
    """The recorder's operator commands (``polybus db …``)."""
    app = typer.Typer()
    app.add_typer(db_app, name="db")
    return app
