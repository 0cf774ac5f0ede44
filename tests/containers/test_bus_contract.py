"""The bus contract (tests/integration/test_bus_contract.py) against compose's NATS image, with
compose's nats.conf: JetStream and password auth (see conftest.py)."""

from __future__ import annotations

from tests.integration.test_bus_contract import *  # noqa: F403 - the same tests, collected here
