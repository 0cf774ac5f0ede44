"""The simulator's own verifier of ``POLY_1271`` (deposit wallet) order signatures, against
signatures made by the official SDK's typed-data builder and eth-account."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account
from polymarket._internal.actions.orders.typed_data import (
    build_order_signature,
    build_order_typed_data,
)
from polymarket._internal.actions.orders.types import UnsignedOrder

from polybus.sim.signing import (
    OrderStruct,
    SignatureError,
    exchange_domain,
    recover_poly_1271_owner,
)

OWNER = Account.from_key("0x" + "42" * 32)
WALLET = "0x" + "9a" * 20
ZERO32 = "0x" + "00" * 32
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"


def signed_order(version: str, exchange: str) -> tuple[OrderStruct, str]:
    unsigned = UnsignedOrder(
        chain_id=137, builder=ZERO32, exchange_address=exchange, expiration=0,  # type: ignore[arg-type]
        maker=WALLET, maker_amount=5_000_000, metadata=ZERO32, order_type="GTC",  # type: ignore[arg-type]
        salt=77, side="BUY", signature_type=3, signer=WALLET, taker_amount=10_000_000,  # type: ignore[arg-type]
        timestamp=1_795_946_806_352, token_id="12345", protocol_version=version,  # type: ignore[arg-type]
    )  # fmt: skip
    inner = OWNER.sign_typed_data(full_message=build_order_typed_data(unsigned))
    signature = build_order_signature(unsigned, "0x" + inner.signature.hex())  # type: ignore[arg-type]
    struct = OrderStruct(
        salt=77, maker=WALLET, signer=WALLET, token_id=12345, maker_amount=5_000_000,
        taker_amount=10_000_000, side=0, signature_type=3, timestamp=1_795_946_806_352,
        metadata=ZERO32, builder=ZERO32,
    )  # fmt: skip
    return struct, signature


def test_a_deposit_wallet_signature_recovers_its_owner_in_domain_3() -> None:
    struct, signature = signed_order("3", EXCHANGE_V3)
    domain = exchange_domain(protocol_v2=True, neg_risk=False)
    assert recover_poly_1271_owner(struct, signature, domain) == OWNER.address.lower()


def test_a_deposit_wallet_signature_for_another_exchange_or_order_is_refused() -> None:
    struct, signature = signed_order("3", EXCHANGE_V3)
    v3 = exchange_domain(protocol_v2=True, neg_risk=False)
    ctf = exchange_domain(protocol_v2=False, neg_risk=False)
    tampered = dataclasses.replace(struct, maker_amount=6_000_000)
    for order, text, domain in (
        (struct, signature, ctf),  # the trailer names ExchangeV3
        (tampered, signature, v3),  # the trailer describes another order
        (struct, signature[:132], v3),  # a bare ECDSA signature is not ERC-1271
        (struct, signature[:-4] + "0000", v3),  # a wrong type-string length
    ):
        with pytest.raises(SignatureError):
            recover_poly_1271_owner(order, text, domain)


def test_a_domain_2_signature_recovers_its_owner_only_in_domain_2() -> None:
    ctf_exchange = "0xE111180000d2663C0091e4f400237545B87B996B"
    struct, signature = signed_order("2", ctf_exchange)
    ctf = exchange_domain(protocol_v2=False, neg_risk=False)
    assert recover_poly_1271_owner(struct, signature, ctf) == OWNER.address.lower()
