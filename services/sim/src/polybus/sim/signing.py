"""EIP-712 as the venue checks it: CLOB V2 orders, ERC-1271 deposit-wallet signatures and the
ClobAuth (L1) message.

Hashes are built the EIP-712 way (every field of these structs is one 32-byte word, so the
encoding is a concatenation); recovering the signer is eth-keys' job (eth-account's key layer)
on its coincurve backend: about 0.1 ms an order, where ``Account.recover_message`` spends
0.25 ms (it checksums the address in Python).
Order struct (CLOB V2, VENUE.md §2.2)::

    Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,
          uint256 takerAmount,uint8 side,uint8 signatureType,uint256 timestamp,
          bytes32 metadata,bytes32 builder)

in domain ``{"Polymarket CTF Exchange", "2", 137, CTFExchangeV2 | NegRisk CTFExchangeV2}`` for
CTF markets and ``{"Polymarket CTF Exchange", "3", 137, ExchangeV3}`` for Protocol V2 markets
(position ids); ClobAuth in ``{"ClobAuthDomain", "1", 137}``. The order hash (the EIP-712
digest) is the venue's order id.

A ``POLY_1271`` (signature type 3) order is signed by the deposit wallet's owner the ERC-7739
way (VENUE.md §2.2): the owner signs ``TypedDataSign(Order contents, name "DepositWallet",
version "1", chainId, verifyingContract = the wallet, salt 0)`` in the exchange's domain, and
the wallet's ``isValidSignature`` gets that 65-byte signature followed by the exchange domain
separator, the order's struct hash, the ``Order`` type string and its length (2 bytes).
:func:`recover_poly_1271_owner` checks it as the wallet contract would.
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
EXCHANGE_V3_VERSION = "3"
CTF_EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_CTF_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"
"""Protocol V2 markets (neg-risk or not) trade through ExchangeV3."""
DEPOSIT_WALLET_NAME = "DepositWallet"
DEPOSIT_WALLET_VERSION = "1"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"

_ORDER_TYPE_STRING = (
    b"Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,"
    b"uint256 takerAmount,uint8 side,uint8 signatureType,uint256 timestamp,bytes32 metadata,"
    b"bytes32 builder)"
)
_ORDER_TYPE = keccak(_ORDER_TYPE_STRING)
# EIP-712 appends referenced struct types to the primary type's string.
_TYPED_DATA_SIGN_TYPE = keccak(
    b"TypedDataSign(Order contents,string name,string version,uint256 chainId,"
    b"address verifyingContract,bytes32 salt)" + _ORDER_TYPE_STRING
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


def _domain_separator(version: str, verifying_contract: str) -> bytes:
    return keccak(
        _DOMAIN_TYPE
        + keccak(EXCHANGE_NAME.encode())
        + keccak(version.encode())
        + _uint(CHAIN_ID)
        + _address(verifying_contract)
    )


@dataclass(frozen=True, slots=True)
class ExchangeDomain:
    """The exchange a market's orders are signed for: its EIP-712 version and contract."""

    version: str
    verifying_contract: str
    separator: bytes


def _exchange_domain(version: str, verifying_contract: str) -> ExchangeDomain:
    separator = _domain_separator(version, verifying_contract)
    return ExchangeDomain(version, verifying_contract, separator)


_DOMAINS = {
    (False, False): _exchange_domain(EXCHANGE_VERSION, CTF_EXCHANGE_V2),
    (False, True): _exchange_domain(EXCHANGE_VERSION, NEG_RISK_CTF_EXCHANGE_V2),
    (True, False): _exchange_domain(EXCHANGE_V3_VERSION, EXCHANGE_V3),
    (True, True): _exchange_domain(EXCHANGE_V3_VERSION, EXCHANGE_V3),
}


def exchange_domain(*, protocol_v2: bool, neg_risk: bool) -> ExchangeDomain:
    """CTFExchangeV2 (domain "2", plain or neg-risk) for CTF markets, ExchangeV3 (domain "3")
    for Protocol V2 markets."""
    return _DOMAINS[(protocol_v2, neg_risk)]


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


def order_hash(order: OrderStruct, domain: ExchangeDomain) -> str:
    """The EIP-712 digest of an order: the venue's order id (``0x`` + 64 hex)."""
    digest = keccak(b"\x19\x01" + domain.separator + order.struct_hash())
    return "0x" + digest.hex()


def recover_order_signer(order: OrderStruct, signature: str, domain: ExchangeDomain) -> str:
    """The address (lower case) that signed ``order`` for the exchange ``domain``."""
    return _recover(domain.separator, order.struct_hash(), signature)


def recover_poly_1271_owner(order: OrderStruct, signature: str, domain: ExchangeDomain) -> str:
    """The owner (lower case) whose ERC-7739 signature the deposit wallet ``order.signer``
    would accept for ``order`` in ``domain``: what its ``isValidSignature`` checks."""
    raw = _hex_bytes(signature, max(len(signature) - 2, 0) // 2)
    contents_type = _ORDER_TYPE_STRING
    expected_length = 65 + 32 + 32 + len(contents_type) + 2
    if len(raw) != expected_length:
        raise SignatureError("not a POLY_1271 signature of an order")
    inner = raw[:65]
    app_domain = raw[65:97]
    contents_hash = raw[97:129]
    declared_type = raw[129:-2]
    declared_length = int.from_bytes(raw[-2:], "big")
    struct_hash = order.struct_hash()
    # The wallet is asked about the order hash; the trailer must describe exactly that order
    # in exactly this exchange's domain, or the signature proves nothing about it.
    if app_domain != domain.separator or contents_hash != struct_hash:
        raise SignatureError("POLY_1271 signature is for another order or exchange")
    if declared_type != contents_type or declared_length != len(contents_type):
        raise SignatureError("POLY_1271 signature names another contents type")
    typed_data_sign = keccak(
        _TYPED_DATA_SIGN_TYPE
        + struct_hash
        + keccak(DEPOSIT_WALLET_NAME.encode())
        + keccak(DEPOSIT_WALLET_VERSION.encode())
        + _uint(CHAIN_ID)
        + _address(order.signer)
        + b"\x00" * 32
    )
    return _recover(domain.separator, typed_data_sign, "0x" + inner.hex())


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
