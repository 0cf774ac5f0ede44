"""The trading account as the venue sees it, and deriving its API credentials (``polybus
account``, docs/live-trading.md).

:func:`inspect_account` reads, never writes: the signer from the private key, the wallet and
signature type from the config, and — with API credentials — the pUSD balance and allowances
the CLOB reports (``GET /balance-allowance``) and the approvals the venue's indexer reports
(``GET /v2/approvals``). Each thing that stops the account from trading is one line of
``missing``. Without credentials it asks the venue nothing: creating a key is
:func:`derive_credentials`'s job, on purpose.

:func:`derive_credentials` creates (or, when the key exists, re-derives) the L2 credentials
with an L1 signature and writes them into the secrets file, which stays readable by its owner
only. Nothing here prints, logs or raises a secret.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from eth_account import Account
from polymarket import AsyncSecureClient
from polymarket.errors import PolymarketError, TransportError

from polybus.common.config import Config
from polybus.common.money import format_micros
from polybus.executor.config import ExecutorSettings
from polybus.executor.live.client import (
    AccountMismatch,
    LiveAccount,
    create_client,
    environment_for,
)

MAX_UINT256 = 2**256 - 1
"""An allowance of this much is the usual "approve max": unlimited."""
DERIVE_HINT = "run: polybus account derive-keys"


class AccountError(Exception):
    """The account cannot be inspected or its keys derived; the message says why (no
    secret in it)."""


class AccountConfigError(AccountError):
    """The config or secrets file does not describe an account (no key, a malformed key)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountReport:
    """What the venue says about the account, and what is missing to trade."""

    signer: str
    wallet: str
    signature_type: str
    has_credentials: bool
    balance: int | None = None
    """pUSD in micro-units (``None``: not asked)."""
    allowances: dict[str, int] = field(default_factory=dict)
    """Spender -> pUSD allowance in micro-units, as the CLOB reports them."""
    approvals: str = "not checked"
    """``complete``, ``incomplete``, or why they could not be read."""
    missing: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.missing

    def to_builtins(self) -> dict[str, Any]:
        """A JSON-ready view: amounts as the venue's decimal strings."""
        return {
            "signer": self.signer,
            "wallet": self.wallet,
            "signature_type": self.signature_type,
            "api_credentials": self.has_credentials,
            "balance": None if self.balance is None else format_micros(self.balance),
            "allowances": {
                spender: format_allowance(amount) for spender, amount in self.allowances.items()
            },
            "approvals": self.approvals,
            "ready": self.ready,
            "missing": self.missing,
        }


def format_allowance(amount: int) -> str:
    return "unlimited" if amount >= MAX_UINT256 else format_micros(amount)


def _live_account(config: Config, *, with_credentials: bool) -> LiveAccount:
    secrets = config.secrets.polymarket
    if secrets.private_key is None:
        raise AccountConfigError(
            "the secrets file has no [polymarket] private_key"
            if config.deployment.secrets_file
            else "the config names no secrets_file (it holds the signing key)"
        )
    settings = config.section("executor", ExecutorSettings)
    try:
        signer = Account.from_key(secrets.private_key.reveal()).address
    except (ValueError, TypeError):
        # eth-account's message may quote the key: say only what is wrong.
        raise AccountConfigError("[polymarket] private_key is not a 32-byte hex key") from None
    return LiveAccount(
        private_key=secrets.private_key,
        wallet=settings.wallet or signer,
        signature_type=settings.signature_type,
        api_key=secrets.api_key if with_credentials else None,
        api_secret=secrets.api_secret if with_credentials else None,
        api_passphrase=secrets.api_passphrase if with_credentials else None,
    )


def _signer(account: LiveAccount) -> str:
    return str(Account.from_key(account.private_key.reveal()).address)


async def _connect(account: LiveAccount, settings: ExecutorSettings) -> AsyncSecureClient:
    try:
        return await create_client(
            account, environment_for(settings.clob_url, user_ws_url=settings.user_ws_url)
        )
    except AccountMismatch as error:
        raise AccountError(str(error)) from None
    except TransportError as error:
        raise AccountError(f"venue {settings.clob_url} unreachable: {_reason(error)}") from None
    except PolymarketError as error:
        raise AccountError(f"the venue refused the account: {_reason(error)}") from None
    except OSError as error:
        raise AccountError(f"venue {settings.clob_url} unreachable: {error.strerror}") from None


def _reason(error: PolymarketError) -> str:
    # The SDK's messages name statuses and the venue's words; its credential objects redact.
    return f"{type(error).__name__}: {error}"


async def inspect_account(config: Config) -> AccountReport:
    """Read the account from the config, the secrets and the venue (no writes)."""
    account = _live_account(config, with_credentials=True)
    settings = config.section("executor", ExecutorSettings)
    signer = _signer(account)
    if account.credentials() is None:
        return AccountReport(
            signer=signer,
            wallet=account.wallet,
            signature_type=account.signature_type,
            has_credentials=False,
            missing=[f"no API credentials in the secrets file ({DERIVE_HINT})"],
        )
    client = await _connect(account, settings)
    missing: list[str] = []
    try:
        try:
            reported = await client.get_balance_allowance(asset_type="COLLATERAL")
        except PolymarketError as error:
            raise AccountError(f"balance not readable: {_reason(error)}") from None
        if reported.balance <= 0:
            missing.append(f"no pUSD balance in wallet {account.wallet}")
        if not reported.allowances:
            missing.append("no pUSD allowance reported for any exchange")
        missing.extend(
            f"no pUSD allowance for exchange {spender}"
            for spender, amount in reported.allowances.items()
            if amount <= 0
        )
        approvals = await _approvals(client, missing)
    finally:
        await client.close()
    return AccountReport(
        signer=signer,
        wallet=account.wallet,
        signature_type=account.signature_type,
        has_credentials=True,
        balance=reported.balance,
        allowances=dict(reported.allowances),
        approvals=approvals,
        missing=missing,
    )


async def _approvals(client: AsyncSecureClient, missing: list[str]) -> str:
    """The indexer's view of the wallet's approvals; each missing one is added to
    ``missing``. Not every deployment has the indexer (the simulator does not): then the
    CLOB's allowances above are all we know, and this says so."""
    try:
        state = await client.get_trading_approvals_state()
    except PolymarketError as error:
        return f"not available from the venue ({type(error).__name__})"
    missing.extend(
        f"missing approval: ERC-20 {approval.token_address} for spender {approval.spender}"
        for approval in state.missing.erc20
    )
    missing.extend(
        f"missing approval: ERC-1155 {approval.token_address} for operator {approval.operator}"
        for approval in state.missing.erc1155
    )
    return "complete" if state.is_fully_approved else "incomplete"


async def derive_credentials(config: Config) -> Path:
    """Create or re-derive the account's API credentials and write them into the secrets
    file (mode 0600); returns its path."""
    if not config.deployment.secrets_file:
        raise AccountConfigError("the config names no secrets_file to write the credentials to")
    path = config.path.parent / config.deployment.secrets_file
    account = _live_account(config, with_credentials=False)
    client = await _connect(account, config.section("executor", ExecutorSettings))
    try:
        credentials = client.credentials
        values = {
            "api_key": credentials.key,
            "api_secret": credentials.secret,
            "api_passphrase": credentials.passphrase,
        }
    finally:
        await client.close()
    write_credentials(path, values)
    return path


def write_credentials(path: Path, values: dict[str, str]) -> None:
    """Set ``values`` in the ``[polymarket]`` table of the secrets file at ``path``, keeping
    its other keys and tables; the file is replaced atomically, readable by its owner only.
    (Comments are not kept: the file is written anew from its values.)"""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        # load_config read it a moment ago; the decoder's message could quote a secret.
        raise AccountError(f"secrets file {path} could not be read back") from None
    table = data.setdefault("polymarket", {})
    if not isinstance(table, dict):
        raise AccountError(f"secrets file {path}: polymarket is not a table")
    table.update(values)
    text = _toml(data)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _toml(data: dict[str, Any]) -> str:
    """TOML for a secrets file: top-level strings, then tables of strings (JSON string
    escapes are TOML basic-string escapes)."""
    lines = [
        "# polybus secrets: readable by its owner only (chmod 600). Written by"
        " `polybus account derive-keys`.",
    ]
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    lines += [f"{key} = {_value(value)}" for key, value in plain.items()]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    raise AccountError("the secrets file holds a value derive-keys cannot rewrite")
