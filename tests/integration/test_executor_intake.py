"""Intent claims in the EXEC_INTENTS KV bucket of a real nats-server: each id exactly once."""

from __future__ import annotations

import asyncio

import msgspec

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.streams import Definitions, apply
from polybus.executor.intake import INTENTS_BUCKET, KvIntentRegistry
from tests.conftest import NatsServerInfo


async def registry(bus: NatsBus) -> KvIntentRegistry:
    return KvIntentRegistry(await bus.js.key_value(bus.namespace.bucket(INTENTS_BUCKET)))


async def create_bucket(bus: NatsBus, definitions: Definitions) -> None:
    only_intents = msgspec.structs.replace(
        definitions,
        stream=(),
        consumer=(),
        bucket=tuple(b for b in definitions.bucket if b.name == INTENTS_BUCKET),
    )
    [change] = await apply(bus.js, only_intents, bus.namespace)
    assert change.action == "created"


async def test_the_bucket_keeps_claims_for_days(bus: NatsBus, definitions: Definitions) -> None:
    await create_bucket(bus, definitions)
    info = await bus.js.stream_info(bus.namespace.bucket_stream(INTENTS_BUCKET))
    assert info.config.max_age is not None
    assert info.config.max_age >= 3 * 86400


async def test_an_intent_id_is_claimed_once(bus: NatsBus, definitions: Definitions) -> None:
    await create_bucket(bus, definitions)
    claims = await registry(bus)
    assert await claims.claim("i1")
    assert not await claims.claim("i1")
    assert await claims.claim("not a valid key: hashed")
    assert not await claims.claim("not a valid key: hashed")
    # A restarted executor (a new registry on the same bucket) still knows the claim.
    assert not await (await registry(bus)).claim("i1")


async def test_concurrent_claims_from_two_connections_give_exactly_one_true(
    bus: NatsBus, definitions: Definitions, nats_server: NatsServerInfo
) -> None:
    await create_bucket(bus, definitions)
    other = await NatsBus.connect(nats_server.url, name="executor-2", namespace=bus.namespace)
    try:
        first, second = await registry(bus), await registry(other)
        ids = [f"intent-{n}" for n in range(50)]
        results = await asyncio.gather(
            *(claims.claim(intent_id) for intent_id in ids for claims in (first, second, first))
        )
    finally:
        await other.drain()
    per_id = [results[index * 3 : index * 3 + 3] for index in range(len(ids))]
    assert all(sum(outcome) == 1 for outcome in per_id), per_id
