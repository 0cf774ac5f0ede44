"""One running pipeline for every fault scenario (tests/faults/pipeline.py): `polybus up --live`
on a copy of config/sim.toml, the executor trading live against the simulator. The fixture and
the scenarios share one event loop per module (``loop_scope="module"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from nats.js import JetStreamContext

from tests.faults.pipeline import Pipeline, running_pipeline


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline() -> AsyncIterator[Pipeline]:
    async with running_pipeline() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def jetstream(pipeline: Pipeline) -> AsyncIterator[JetStreamContext]:
    async with pipeline.jetstream() as client:
        yield client
