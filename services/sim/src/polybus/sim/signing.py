"""EIP-712 as the venue checks it: CLOB V2 orders and the ClobAuth (L1) message.

Hashes are built the EIP-712 way (every field of these structs is one 32-byte word, so the
encoding is a concatenation); recovering the signer is eth-keys' job (eth-account's key layer)
on its coincurve backend: about 0.1 ms an order, where ``Account.recover_message`` spends
0.25 ms (it checksums the address in Python).
Order struct (CLOB V2, VENUE.md §2.2)::

    Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,
          uint256 takerAmount,uint8 side,uint8 signatureType,uint256 timestamp,
          bytes32 metadata,bytes32 builder)

in domain ``{"Polymarket CTF Exchange", "2", 137, CTFExchangeV2 | NegRisk CTFExchangeV2}``;
ClobAuth in ``{"ClobAuthDomain", "1", 137}``. The order hash (the EIP-712 digest) is the
venue's order id.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_keys.backends.coincurve import CoinCurveECCBackend
from eth_keys.exceptions import BadSignature
from eth_keys.main import KeyAPI
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

CHAIN_ID = 137
EXCHANGE_NAME = "Polymarket CTF Exchange"
EXCHANGE_VERSION = "2"
CTF_EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_CTF_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"

_ORDER_TYPE = keccak(
    b"Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,"
    b"uint256 takerAmount,uint8 side,uint8 signatureType,uint256 timestamp,bytes32 metadata,"
    b"bytes32 builder)"
)
_DOMAIN_TYPE = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_AUTH_DOMAIN_TYPE = keccak(b"EIP712Domain(string name,string version,uint256 chainId)")
_CLOB_AUTH_TYPE = keccak(b"ClobAuth(address address,string timestamp,uint256 nonce,string message)")


class SignatureError(ValueError):
    """A value that cannot be part of a signed struct, or a signature that does not recover."""


def _uint(value: int) -> bytes:
    if not 0 <= value < 2**256:
        raise SignatureError(f"{value} is not a uint256")
    return value.to_bytes(32, "big")


def _address(value: str) -> bytes:
    raw = _hex_bytes(value, 20)
    return b"\x00" * 12 + raw


def _bytes32(value: str) -> bytes:
    return _hex_bytes(value, 32)


def _hex_bytes(value: str, length: int) -> bytes:
    if not value.startswith(("0x", "0X")) or len(value) != 2 + 2 * length:
        raise SignatureError(f"{value!r} is not a 0x-prefixed {length}-byte hex value")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise SignatureError(f"{value!r} is not hex") from None


def _domain_separator(verifying_contract: str) -> bytes:
    return keccak(
        _DOMAIN_TYPE
        + keccak(EXCHANGE_NAME.encode())
        + keccak(EXCHANGE_VERSION.encode())
        + _uint(CHAIN_ID)
        + _address(verifying_contract)
    )


_DOMAINS = {
    False: _domain_separator(CTF_EXCHANGE_V2),
    True: _domain_separator(NEG_RISK_CTF_EXCHANGE_V2),
}
_AUTH_DOMAIN = keccak(
    _AUTH_DOMAIN_TYPE + keccak(b"ClobAuthDomain") + keccak(b"1") + _uint(CHAIN_ID)
)


@dataclass(frozen=True, slots=True)
class OrderStruct:
    """The signed fields of a V2 order (``side`` 0 BUY / 1 SELL)."""

    salt: int
    maker: str
    signer: str
    token_id: int
    maker_amount: int
    taker_amount: int
    side: int
    signature_type: int
    timestamp: int
    metadata: str
    builder: str

    def struct_hash(self) -> bytes:
        return keccak(
            _ORDER_TYPE
            + _uint(self.salt)
            + _address(self.maker)
            + _address(self.signer)
            + _uint(self.token_id)
            + _uint(self.maker_amount)
            + _uint(self.taker_amount)
            + _uint(self.side)
            + _uint(self.signature_type)
            + _uint(self.timestamp)
            + _bytes32(self.metadata)
            + _bytes32(self.builder)
        )


_keys = KeyAPI(CoinCurveECCBackend())


def _recover(domain: bytes, struct_hash: bytes, signature: str) -> str:
    """The lower-case 0x address that signed the EIP-712 digest of (domain, struct)."""
    raw = _hex_bytes(signature, 65)
    v = raw[64]
    # Wallets sign with v = 27/28 (some with 0/1); eth-keys wants 0/1.
    if v >= 27:
        v -= 27
    try:
        recovered = _keys.ecdsa_recover(
            keccak(b"\x19\x01" + domain + struct_hash), _keys.Signature(raw[:64] + bytes([v]))
        )
    except (BadSignature, ValidationError) as error:
        raise SignatureError(f"signature does not recover: {error}") from None
    return "0x" + recovered.to_canonical_address().hex()


def order_hash(order: OrderStruct, *, neg_risk: bool) -> str:
    """The EIP-712 digest of an order: the venue's order id (``0x`` + 64 hex)."""
    digest = keccak(b"\x19\x01" + _DOMAINS[neg_risk] + order.struct_hash())
    return "0x" + digest.hex()


def recover_order_signer(order: OrderStruct, signature: str, *, neg_risk: bool) -> str:
    """The address (lower case) that signed ``order`` for the (neg-risk) CTFExchangeV2
    domain."""
    return _recover(_DOMAINS[neg_risk], order.struct_hash(), signature)


def recover_clob_auth_signer(*, address: str, timestamp: str, nonce: int, signature: str) -> str:
    """The address (lower case) that signed the L1 ClobAuth message."""
    struct_hash = keccak(
        _CLOB_AUTH_TYPE
        + _address(address)
        + keccak(timestamp.encode())
        + _uint(nonce)
        + keccak(CLOB_AUTH_MESSAGE.encode())
    )
    return _recover(_AUTH_DOMAIN, struct_hash, signature)
