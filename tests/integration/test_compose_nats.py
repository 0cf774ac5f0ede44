"""The NATS server of deploy/compose.yaml, started the way compose starts it.

No Docker here, but the container's part is small: compose's entrypoint script, deploy/nats.conf
and the ``nats_password`` secret. This runs that very script with the real nats-server binary
(the container's ports, secret path and data volume moved to free ports and a temp dir) and
checks what compose relies on: the healthcheck URL answers, the services log in with the
``[nats]`` user and password of their secrets file, anonymous clients are refused, and SIGTERM
reaches nats-server (``exec``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.config import load_secrets
from polybus.common.infra import free_port
from polybus.common.infra.nats_server import healthy, nats_server_binary
from tests.helpers import eventually, write_secrets

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# Starts with a digit and has a space: nats-server parses $NATS_PASSWORD as a config value, so
# the entrypoint must quote it for this to be taken as the string it is.
PASSWORD = "3 little-secrets_0x"


@pytest.fixture
async def compose_nats(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    server = compose["services"]["nats-server"]
    shell, flag, script = server["entrypoint"]
    assert (shell, flag) == ("/bin/sh", "-c")
    secret = write_secrets(tmp_path / "nats_password", PASSWORD)
    # The data volume (/data) becomes a temp dir, the container's ports free ones here.
    conf = tmp_path / "nats.conf"
    conf.write_text((DEPLOY / "nats.conf").read_text().replace("/data", str(tmp_path / "data")))
    port, monitor = free_port(), free_port()
    script = (
        script.replace("$$", "$")  # compose's escape for a literal $
        .replace("/run/secrets/nats_password", str(secret))
        .replace("/etc/nats/nats.conf", str(conf))
    ) + f" --port {port} --http_port {monitor}"
    path = f"{nats_server_binary().parent}{os.pathsep}{os.environ.get('PATH', '')}"
    process = await asyncio.create_subprocess_exec(
        shell, flag, script, env={**os.environ, "PATH": path},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(
            lambda: asyncio.to_thread(healthy, "127.0.0.1", monitor), 20, "the healthcheck URL"
        )
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_services_log_in_with_their_secrets_file_and_strangers_are_refused(
    compose_nats: tuple[asyncio.subprocess.Process, int], tmp_path: Path
) -> None:
    _, port = compose_nats
    url = f"nats://127.0.0.1:{port}"
    secrets_file = tmp_path / "secrets.toml"
    write_secrets(secrets_file, f'[nats]\nuser = "polybus"\npassword = "{PASSWORD}"\n')

    bus = await NatsBus.connect(url, name="compose-test", secrets=load_secrets(secrets_file))
    try:
        assert (await bus.js.account_info()).streams >= 0  # JetStream answers the user
    finally:
        await bus.drain()

    for credentials in ({}, {"user": "polybus", "pass": "wrong"}):
        assert "Authorization Violation" in await connect_answer(port, credentials)


async def connect_answer(port: int, credentials: dict[str, str]) -> str:
    """What the server answers a client's CONNECT (the protocol by hand: nats-py leaves the
    socket of a refused connection open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # INFO
        connect = json.dumps({"verbose": False, "pedantic": False, **credentials})
        writer.write(f"CONNECT {connect}\r\nPING\r\n".encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_sigterm_reaches_nats_server_through_the_entrypoint(
    compose_nats: tuple[asyncio.subprocess.Process, int],
) -> None:
    process, _ = compose_nats

    process.terminate()

    # The shell exec'd nats-server, so the signal is nats-server's: it stops, and quickly.
    assert await asyncio.wait_for(process.wait(), 5) == 0
