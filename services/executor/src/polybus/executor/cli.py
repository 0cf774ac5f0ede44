"""``polybus account``: the trading account as the venue sees it, and ``polybus account
derive-keys`` (docs/live-trading.md).

Exit codes: 0 ready to trade (``derive-keys``: credentials written), 1 not ready, or the venue
refused or could not be reached (one line on stderr), 2 bad usage or a config or secrets file
that is invalid or holds no usable signing key.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from polybus.common.cli import DEFAULT_CONFIG, ConfigOption, fail
from polybus.common.config import Config, ConfigError, load_config
from polybus.common.plugins import discover_plugins, section_types
from polybus.executor.config import ExecutorSettings

if TYPE_CHECKING:
    from polybus.executor.account import AccountReport

# polybus.executor.account is imported in the commands, not here: it brings in the venue SDK
# and eth_account (seconds of imports), which every other ``polybus`` command would pay for,
# since the CLI builds this module's commands on each start.

account_app = typer.Typer(
    help="The trading account: signer, wallet, balance, allowances, API credentials.",
    invoke_without_command=True,
)


def _load(path: Path) -> Config:
    # Only the executor's section and the secrets matter here, so the commands work whether
    # or not the executor's plugin (which declares the section) is installed.
    try:
        return load_config(
            path, {**section_types(discover_plugins()), "executor": ExecutorSettings}
        )
    except ConfigError as error:
        raise fail(f"config error: {error}", 2) from None


def _print(report: AccountReport) -> None:
    from polybus.executor.account import format_allowance

    rows = [
        ("signer", report.signer),
        ("wallet", report.wallet),
        ("signature type", report.signature_type),
        ("API credentials", "in the secrets file" if report.has_credentials else "none"),
        (
            "pUSD balance",
            "unknown" if report.balance is None else format_allowance(report.balance),
        ),
    ]
    rows += [
        (f"allowance {spender}", format_allowance(amount))
        for spender, amount in report.allowances.items()
    ]
    rows += [("approvals", report.approvals), ("ready", "yes" if report.ready else "no")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name:<{width}}  {value}")
    for line in report.missing:
        typer.echo(f"missing: {line}")


@account_app.callback()
def account_command(
    context: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Show signer, wallet, signature type, pUSD balance and allowances as the venue reports
    them, and each thing missing to trade. Exit 0 ready, 1 not ready."""
    if context.invoked_subcommand is not None:
        return
    from polybus.executor.account import AccountConfigError, AccountError, inspect_account

    loaded = _load(config)
    try:
        report = asyncio.run(inspect_account(loaded))
    except AccountConfigError as error:
        raise fail(f"account: {error}", 2) from None
    except AccountError as error:
        raise fail(f"account: {error}", 1) from None
    if as_json:
        typer.echo(json.dumps(report.to_builtins()))
    else:
        _print(report)
    raise typer.Exit(0 if report.ready else 1)


@account_app.command("derive-keys")
def derive_keys_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Create (or re-derive) the API credentials with the signing key and write them into
    the secrets file (mode 0600). The secret is never printed."""
    from polybus.executor.account import AccountConfigError, AccountError, derive_credentials

    loaded = _load(config)
    try:
        path = asyncio.run(derive_credentials(loaded))
    except AccountConfigError as error:
        raise fail(f"derive-keys: {error}", 2) from None
    except AccountError as error:
        raise fail(f"derive-keys: {error}", 1) from None
    typer.echo(
        f"API credentials written to {path} ([polymarket] api_key, api_secret, api_passphrase)"
    )


def commands() -> typer.Typer:
    """The executor's operator commands (``polybus account …``)."""
    app = typer.Typer()
    app.add_typer(account_app, name="account")
    return app
