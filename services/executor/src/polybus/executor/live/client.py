"""Everything that touches the official SDK's private parts, in one place (VENUE §2.3).

``polymarket-client`` 0.14.0 (pinned) has no public way to name a host, to sign with market
facts we already hold, or to build a client without its implicit wallet deployment. So this
module, and only this module, reaches into it:

- :func:`private_environment`: an SDK environment whose URLs point at another host (the
  simulator), built the way ``tests/integration/test_sim_sdk.py`` showed works.
- :func:`create_client`: ``AsyncSecureClient._create`` instead of ``create``, because ``create``
  deploys a Deposit Wallet through the relayer when the wallet is not deployed yet — an
  on-chain side effect the executor must never cause by itself. ``wallet=`` and
  ``credentials=`` are always passed, and the wallet type the SDK infers from the addresses
  must equal the signature type the settings declare.
- :class:`SdkMarkets`: seeds the SDK's order-metadata cache with the tick and neg-risk flag
  our market data says, so the SDK signs on the *current* tick (hazard H17) without an HTTP
  round trip, instead of its own 10-minute-old copy.
- :func:`order_hash`: the venue's order id of a signed order (its EIP-712 digest), so an order
  whose submit outcome is unknown can be looked up.

``tests/unit/test_executor_live_sdk_contract.py`` fails loudly when an SDK upgrade moves any of
these.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Literal, cast

from eth_account.messages import _hash_eip191_message, encode_typed_data
from polymarket import AsyncSecureClient
from polymarket._internal.actions.orders.context import resolve_order_exchange_address
from polymarket._internal.actions.orders.market_data import MarketInfo, PlatformFeeInfo
from polymarket._internal.actions.orders.typed_data import _build_standard_typed_data
from polymarket._internal.actions.orders.types import UnsignedOrder
from polymarket._internal.environment import get_environment_config
from polymarket._internal.protocol import is_v2_position_id
from polymarket.environments import PRODUCTION, Environment, _create_environment
from polymarket.models.clob import ApiKeyCreds
from polymarket.models.clob.orders import SignedOrder
from polymarket.models.types import ClobAssetId, ConditionId
from polymarket.rate_limit import RateLimitUpdateListener

from polybus.common.config import Secret
from polybus.common.money import MICROS
from polybus.executor.venue import ExchangeVersion, VenueOrder

SignatureType = Literal["EOA", "POLY_PROXY", "GNOSIS_SAFE", "POLY_1271"]
"""How orders are signed (VENUE §2.2): 0 the EOA itself, 1 a Polymarket proxy, 2 a Safe, 3 a
deposit wallet validated through ERC-1271."""

_SDK_WALLET_TYPES: dict[SignatureType, str] = {
    "EOA": "EOA",
    "POLY_PROXY": "POLY_PROXY",
    "GNOSIS_SAFE": "GNOSIS_SAFE",
    "POLY_1271": "DEPOSIT_WALLET",
}


class AccountMismatch(ValueError):
    """The wallet does not derive from the signer the way the declared signature type says."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LiveAccount:
    """Who trades: the signing key, the wallet orders are made for, how they are signed, and
    the L2 credentials (``None``: the SDK creates or derives them, one L1 request)."""

    private_key: Secret
    wallet: str
    signature_type: SignatureType
    api_key: Secret | None = None
    api_secret: Secret | None = None
    api_passphrase: Secret | None = None

    def credentials(self) -> ApiKeyCreds | None:
        if self.api_key is None or self.api_secret is None or self.api_passphrase is None:
            return None
        return ApiKeyCreds.model_validate(
            {
                "apiKey": self.api_key.reveal(),
                "secret": self.api_secret.reveal(),
                "passphrase": self.api_passphrase.reveal(),
            }
        )


def private_environment(
    *,
    clob_url: str,
    market_ws_url: str = "",
    user_ws_url: str = "",
    other_url: str = "",
) -> Environment:
    """Production's contracts and chain with the CLOB (and the relayer, Gamma, Data API and
    RPC: ``other_url``, default the CLOB's) at other URLs. The SDK constructs environments
    privately (VENUE §2.3 caveat 3)."""
    other = other_url or clob_url
    config = dataclasses.replace(
        PRODUCTION._config,
        clob_url=clob_url,
        clob_market_ws_url=market_ws_url or PRODUCTION._config.clob_market_ws_url,
        clob_user_ws_url=user_ws_url or PRODUCTION._config.clob_user_ws_url,
        relayer_url=other,
        gamma_url=other,
        data_url=other,
        rpc_url=other,
    )
    return _create_environment(name="private", config=config)


def environment_for(clob_url: str, *, user_ws_url: str = "") -> Environment:
    """Production when ``clob_url`` is the venue's, a private environment otherwise."""
    if clob_url.rstrip("/") == PRODUCTION._config.clob_url:
        return PRODUCTION
    return private_environment(clob_url=clob_url, user_ws_url=user_ws_url)


async def create_client(
    account: LiveAccount,
    environment: Environment = PRODUCTION,
    *,
    on_rate_limit_update: RateLimitUpdateListener | None = None,
) -> AsyncSecureClient:
    """An authenticated SDK client for ``account`` that never deploys a wallet by itself.

    Network: credential validation (``GET /auth/api-keys``) when credentials are given, else
    ``POST /auth/api-key`` (or derive). Raises :class:`AccountMismatch` when the SDK infers
    another wallet type than ``account.signature_type``."""
    client = await AsyncSecureClient._create(
        private_key=account.private_key.reveal(),
        wallet=account.wallet,
        environment=environment,
        credentials=account.credentials(),
        validate_credentials=True,
        on_rate_limit_update=on_rate_limit_update,
    )
    inferred = client._ctx.wallet_type
    if inferred != _SDK_WALLET_TYPES[account.signature_type]:
        await client.close()
        raise AccountMismatch(
            f"wallet {account.wallet} is a {inferred} wallet of this signer, "
            f"not {account.signature_type}"
        )
    return client


def api_key_of(client: AsyncSecureClient) -> str:
    """The API key (the ``owner`` of our orders and trades); not a secret on its own."""
    return client._ctx.credentials.key


def wallet_of(client: AsyncSecureClient) -> str:
    return str(client._ctx.wallet)


def signature_type_of(client: AsyncSecureClient) -> SignatureType:
    inferred = client._ctx.wallet_type
    return next(ours for ours, sdk in _SDK_WALLET_TYPES.items() if sdk == inferred)


def exchange_version_of(asset_id: str) -> ExchangeVersion:
    """The domain the SDK signs an asset's orders in: it decides from the id's namespace
    (Protocol V2 position ids leave the reserved bits zero), not from a market flag."""
    return "3" if is_v2_position_id(asset_id) else "2"


class SdkMarkets:
    """Seeds the SDK's per-condition metadata cache with our market facts before signing."""

    def __init__(self, client: AsyncSecureClient) -> None:
        self._cache = client._ctx.order_metadata
        self._assets: dict[str, frozenset[str]] = {}

    def prime(self, order: VenueOrder) -> None:
        assets = self._assets.get(order.condition_id, frozenset()) | {order.asset_id}
        self._assets[order.condition_id] = assets
        condition = ConditionId(order.condition_id)
        self._cache._conditions.set(cast(ClobAssetId, order.asset_id), condition)
        self._cache._markets.set(
            condition,
            MarketInfo(
                # Only read for ``max_spend`` (fee-inclusive market BUYs), which we never use.
                fee_info=PlatformFeeInfo(rate=Decimal(0), exponent=Decimal(1)),
                neg_risk=order.neg_risk,
                tick_size=Decimal(order.tick_size) / MICROS,
                token_ids=frozenset(cast(ClobAssetId, asset) for asset in assets),
            ),
        )


def order_hash(client: AsyncSecureClient, signed: SignedOrder, *, neg_risk: bool) -> str:
    """The venue's order id of ``signed``: the EIP-712 digest of the order struct in its
    exchange's domain (the same for every signature type)."""
    config = get_environment_config(client._ctx.environment)
    unsigned = UnsignedOrder(
        chain_id=config.chain_id,
        builder=signed.builder,
        exchange_address=resolve_order_exchange_address(
            config, asset_id=signed.token_id, neg_risk=neg_risk
        ),
        expiration=signed.expiration,
        maker=signed.maker,
        maker_amount=signed.maker_amount,
        metadata=signed.metadata,
        order_type=signed.order_type,
        salt=signed.salt,
        side=signed.side,
        signature_type=signed.signature_type,
        signer=signed.signer,
        taker_amount=signed.taker_amount,
        timestamp=signed.timestamp,
        token_id=signed.token_id,
        protocol_version=exchange_version_of(signed.token_id),
    )
    typed = _build_standard_typed_data(unsigned, protocol_version=unsigned.protocol_version)
    return "0x" + _hash_eip191_message(encode_typed_data(full_message=typed)).hex()
