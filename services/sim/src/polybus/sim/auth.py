"""API keys and the venue's two authentication levels (VENUE.md §2.5).

L1 (``POST /auth/api-key``, ``GET /auth/derive-api-key``): headers ``POLY_ADDRESS``,
``POLY_SIGNATURE`` (EIP-712 ClobAuth), ``POLY_TIMESTAMP``, ``POLY_NONCE``; the recovered
signer must be ``POLY_ADDRESS``. Credentials derive deterministically from (seed, address,
nonce), so deriving again returns the same key.

L2 (every trading and account endpoint): ``POLY_ADDRESS``, ``POLY_SIGNATURE``,
``POLY_TIMESTAMP``, ``POLY_API_KEY``, ``POLY_PASSPHRASE``; the signature is the URL-safe base64
HMAC-SHA256 (key: the URL-safe base64-decoded secret) of ``timestamp + METHOD + path + body``
(path without the query string, body exactly as sent).

Secrets are held in memory only; they never reach a log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from polybus.common.polymarket.clob import PolymarketApiCredentials
from polybus.sim.http_util import error_response
from polybus.sim.signing import SignatureError, recover_clob_auth_signer

INVALID_L1 = "Invalid L1 Request headers"
UNAUTHORIZED = "Unauthorized/Invalid api key"


class AuthError(Exception):
    """Authentication failed; the message is the venue's 401 body."""


Handler = Callable[[web.Request], Awaitable[web.Response]]
L1Handler = Callable[[web.Request, str, int], Awaitable[web.Response]]
"""Called with the request, the signer's address and the nonce."""
L2Handler = Callable[[web.Request, "ApiKey", bytes], Awaitable[web.Response]]
"""Called with the request, its API key and its body as sent."""


@dataclass(eq=False)
class ApiKey:
    key: str
    secret: str = field(repr=False)
    passphrase: str = field(repr=False)
    address: str
    """Lower-case 0x address the key belongs to (orders must be signed by it)."""
    nonce: int
    heartbeat_id: str = ""
    heartbeat_deadline: float | None = None
    """Monotonic time after which the dead-man switch cancels the key's orders."""


def _pad(value: str) -> str:
    return value + "=" * (-len(value) % 4)


class ApiKeys:
    def __init__(self, seed: int) -> None:
        self._seed = seed
        self.by_key: dict[str, ApiKey] = {}
        self._by_address_nonce: dict[tuple[str, int], ApiKey] = {}

    def _derive(self, address: str, nonce: int) -> ApiKey:
        material = hashlib.sha256(f"{self._seed}:api-key:{address}:{nonce}".encode()).digest()
        secret = hashlib.sha256(b"secret" + material).digest()
        passphrase = hashlib.sha256(b"passphrase" + material).hexdigest()
        return ApiKey(
            key=str(uuid.UUID(bytes=material[:16], version=4)),
            secret=base64.urlsafe_b64encode(secret).decode(),
            passphrase=passphrase,
            address=address,
            nonce=nonce,
        )

    def create(self, address: str, nonce: int) -> ApiKey | None:
        """A new key for (address, nonce); None if that nonce already has one."""
        if (address, nonce) in self._by_address_nonce:
            return None
        return self.derive(address, nonce)

    def derive(self, address: str, nonce: int) -> ApiKey:
        existing = self._by_address_nonce.get((address, nonce))
        if existing is not None:
            return existing
        key = self._derive(address, nonce)
        self._by_address_nonce[(address, nonce)] = key
        self.by_key[key.key] = key
        return key

    def delete(self, key: ApiKey) -> None:
        self.by_key.pop(key.key, None)
        self._by_address_nonce.pop((key.address, key.nonce), None)

    def keys_of(self, address: str) -> list[ApiKey]:
        return [key for key in self.by_key.values() if key.address == address]

    @staticmethod
    def credentials(key: ApiKey) -> PolymarketApiCredentials:
        return PolymarketApiCredentials(
            api_key=key.key, secret=key.secret, passphrase=key.passphrase
        )

    # -- handlers behind authentication ------------------------------------------------------
    def l1(self, handler: L1Handler) -> Handler:
        """``handler`` behind L1 authentication: a request that fails it answers 401."""

        async def authenticated(request: web.Request) -> web.Response:
            try:
                address, nonce = self.verify_l1(request)
            except AuthError as error:
                return error_response(401, str(error))
            return await handler(request, address, nonce)

        return authenticated

    def l2(self, handler: L2Handler) -> Handler:
        """``handler`` behind L2 authentication: a request that fails it answers 401."""

        async def authenticated(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                key = self.verify_l2(request, body)
            except AuthError as error:
                return error_response(401, str(error))
            return await handler(request, key, body)

        return authenticated

    # -- verification ----------------------------------------------------------------------
    @staticmethod
    def verify_l1(request: web.Request) -> tuple[str, int]:
        """(address, nonce) of a valid L1 request; AuthError otherwise."""
        headers = request.headers
        address = headers.get("POLY_ADDRESS", "")
        signature = headers.get("POLY_SIGNATURE", "")
        timestamp = headers.get("POLY_TIMESTAMP", "")
        nonce_text = headers.get("POLY_NONCE", "0") or "0"
        if not (address and signature and timestamp) or not nonce_text.isdigit():
            raise AuthError(INVALID_L1)
        try:
            signer = recover_clob_auth_signer(
                address=address, timestamp=timestamp, nonce=int(nonce_text), signature=signature
            )
        except SignatureError:
            raise AuthError(INVALID_L1) from None
        if signer != address.lower():
            raise AuthError(INVALID_L1)
        return signer, int(nonce_text)

    def verify_l2(self, request: web.Request, body: bytes) -> ApiKey:
        """The API key of a valid L2 request; AuthError otherwise."""
        headers = request.headers
        key = self.by_key.get(headers.get("POLY_API_KEY", ""))
        if key is None:
            raise AuthError(UNAUTHORIZED)
        address = headers.get("POLY_ADDRESS", "").lower()
        passphrase = headers.get("POLY_PASSPHRASE", "")
        timestamp = headers.get("POLY_TIMESTAMP", "")
        signature = headers.get("POLY_SIGNATURE", "")
        if (
            address != key.address
            or not hmac.compare_digest(passphrase, key.passphrase)
            or not timestamp
            or not signature
        ):
            raise AuthError(UNAUTHORIZED)
        message = f"{timestamp}{request.method}{request.path}".encode() + body
        expected = hmac.new(
            base64.urlsafe_b64decode(_pad(key.secret)), message, hashlib.sha256
        ).digest()
        try:
            given = base64.urlsafe_b64decode(_pad(signature))
        except (binascii.Error, ValueError):
            raise AuthError(UNAUTHORIZED) from None
        if not hmac.compare_digest(given, expected):
            raise AuthError(UNAUTHORIZED)
        return key

    def verify_ws(self, api_key: str, secret: str, passphrase: str) -> ApiKey | None:
        """The key a user-channel ``auth`` frame names, if its secret and passphrase match."""
        key = self.by_key.get(api_key)
        if key is None:
            return None
        if not (
            hmac.compare_digest(secret, key.secret)
            and hmac.compare_digest(passphrase, key.passphrase)
        ):
            return None
        return key
