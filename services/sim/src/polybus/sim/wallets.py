"""Smart-contract wallets deployed on the simulated chain: proxy wallets (signature type 1),
Gnosis Safes (2) and deposit wallets (3, ``POLY_1271``), each with the EOA that owns it.

On Polygon these are contracts at CREATE2 addresses derived from the owner; the simulator does
not derive them (that would be a second copy of the SDK's derivation, proving nothing). A test
or an operator *deploys* the wallet instead (:meth:`Wallets.deploy`, ``POST /admin/wallets``),
naming its address, owner and type, and the relayer's ``GET /deployed`` then says it exists,
as the official SDK asks before it trades for a non-EOA wallet (VENUE.md §2.3 caveat 2).

An order of type 1 or 2 must name a wallet of that type owned by its signer as ``maker``; a
type 3 order names the deposit wallet as ``maker`` and ``signer``, and its owner signs.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from polybus.sim.http_util import error_response, json_response

EOA, POLY_PROXY, POLY_GNOSIS_SAFE, POLY_1271 = 0, 1, 2, 3
SIGNATURE_TYPES = (EOA, POLY_PROXY, POLY_GNOSIS_SAFE, POLY_1271)
_RELAYER_TYPES = {"PROXY": POLY_PROXY, "SAFE": POLY_GNOSIS_SAFE, "WALLET": POLY_1271}
"""The relayer's names for the wallet kinds (``GET /deployed?type=``)."""


@dataclass(frozen=True, slots=True)
class Wallet:
    address: str
    owner: str
    signature_type: int


class Wallets:
    def __init__(self) -> None:
        self._by_address: dict[str, Wallet] = {}

    def deploy(self, *, address: str, owner: str, signature_type: int) -> Wallet:
        """Put a wallet of ``signature_type`` (1, 2 or 3) owned by ``owner`` on the chain."""
        if signature_type not in (POLY_PROXY, POLY_GNOSIS_SAFE, POLY_1271):
            raise ValueError(f"signature type {signature_type} is not a smart-contract wallet")
        for name, value in (("address", address), ("owner", owner)):
            if not (value.startswith("0x") and len(value) == 42):
                raise ValueError(f"{name} {value!r} is not a 0x-prefixed 20-byte address")
        wallet = Wallet(address.lower(), owner.lower(), signature_type)
        self._by_address[wallet.address] = wallet
        return wallet

    def get(self, address: str) -> Wallet | None:
        return self._by_address.get(address.lower())

    def owned_by(self, address: str, owner: str, signature_type: int) -> bool:
        """Whether ``address`` is a deployed wallet of that type owned by ``owner``."""
        wallet = self.get(address)
        return (
            wallet is not None
            and wallet.owner == owner.lower()
            and wallet.signature_type == signature_type
        )

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/deployed", self.deployed)]

    async def deployed(self, request: web.Request) -> web.Response:
        """The relayer's ``GET /deployed?address=&type=``: ``{"deployed": bool}``."""
        address = request.query.get("address", "")
        if not address:
            return error_response(400, "address is required")
        wallet = self.get(address)
        kind = request.query.get("type", "")
        wanted = _RELAYER_TYPES.get(kind.upper()) if kind else None
        deployed = wallet is not None and (wanted is None or wallet.signature_type == wanted)
        return json_response({"deployed": deployed})
