"""The private parts of the pinned SDK the live adapter relies on (live/client.py). When an SDK
upgrade moves one, this fails here, loudly, instead of in production."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from polymarket import AsyncSecureClient
from polymarket._internal.actions.orders.cache import AsyncOrderMetadataCache
from polymarket.environments import PRODUCTION

from polybus.executor.live.client import exchange_version_of, private_environment


def test_the_sdk_is_the_pinned_version() -> None:
    assert version("polymarket-client") == "0.14.0"


def test_a_private_environment_points_every_url_we_use_elsewhere() -> None:
    environment = private_environment(
        clob_url="http://127.0.0.1:1", user_ws_url="ws://127.0.0.1:1/ws/user"
    )
    config = environment._config
    assert config.clob_url == "http://127.0.0.1:1"
    assert config.clob_user_ws_url == "ws://127.0.0.1:1/ws/user"
    assert {config.relayer_url, config.gamma_url, config.data_url, config.rpc_url} == {
        "http://127.0.0.1:1"
    }
    assert config.chain_id == PRODUCTION._config.chain_id == 137
    assert config.standard_exchange == PRODUCTION._config.standard_exchange


def test_client_creation_without_wallet_deployment_still_exists() -> None:
    parameters = inspect.signature(AsyncSecureClient._create).parameters
    assert {"private_key", "wallet", "environment", "credentials", "validate_credentials"} <= set(
        parameters
    )
    # create() is _create() plus the wallet check that may deploy a Deposit Wallet.
    assert "_ensure_wallet_ready" in inspect.getsource(AsyncSecureClient.create)


def test_post_orders_sends_one_request_and_does_not_poll_trades() -> None:
    source = inspect.getsource(AsyncSecureClient.post_orders)
    assert "post_json" in source
    assert "settlement" not in source


def test_the_metadata_cache_can_be_seeded() -> None:
    cache = AsyncOrderMetadataCache()
    assert callable(cache._conditions.set)
    assert callable(cache._markets.set)


def test_the_sdk_picks_the_exchange_domain_from_the_asset_id() -> None:
    ctf_token = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
    assert exchange_version_of(ctf_token) == "2"
    # A Protocol V2 position id leaves bits 40..103 zero (module id in the top byte).
    position_id = str((1 << 248) | (0xABC << 104) | 1)
    assert exchange_version_of(position_id) == "3"
