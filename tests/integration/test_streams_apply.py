"""`polybus streams apply`: creates what is missing, updates what differs, else says so."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
from typer.testing import CliRunner

from polybus.common.bus.nats_bus import NatsBus
from polybus.common.cli import app
from polybus.common.streams import Definitions, apply
from tests.conftest import REPO, STREAMS_FILE, NatsServerInfo


async def test_apply_is_idempotent(bus: NatsBus, definitions: Definitions) -> None:
    first = await apply(bus.js, definitions, bus.namespace)
    assert {change.action for change in first} == {"created"}
    assert {c.name for c in first if c.kind == "stream"} == {
        bus.namespace.stream(s.name) for s in definitions.stream
    }
    second = await apply(bus.js, definitions, bus.namespace)
    assert [change.action for change in second] == ["unchanged"] * len(first)


async def test_a_changed_definition_is_updated_in_place(
    bus: NatsBus, definitions: Definitions
) -> None:
    await apply(bus.js, definitions, bus.namespace)
    md = definitions.stream_named("MD")
    changed = msgspec.structs.replace(
        definitions,
        stream=tuple(
            msgspec.structs.replace(s, max_age_s=3600) if s is md else s for s in definitions.stream
        ),
    )
    changes = await apply(bus.js, changed, bus.namespace)
    [updated] = [c for c in changes if c.action != "unchanged"]
    assert updated.name == bus.namespace.stream("MD")
    assert updated.action == "updated"
    assert updated.differences == ("max_age",)
    info = await bus.js.stream_info(bus.namespace.stream("MD"))
    assert info.config.max_age == 3600


async def test_cli_apply_twice_says_nothing_to_change(
    bus: NatsBus, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[bus]\nurl = "{nats_server.url}"\nstreams_file = "{STREAMS_FILE}"\n'
        f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
        f'stream_prefix = "{bus.namespace.stream_prefix}"\n'
    )
    runner = CliRunner()
    # The CLI runs its own event loop; keep ours free while it does.
    first = await asyncio.to_thread(
        runner.invoke, app, ["streams", "apply", "--config", str(config)]
    )
    assert first.exit_code == 0, first.output
    assert f"stream {bus.namespace.stream('MD')}: created" in first.output
    second = await asyncio.to_thread(
        runner.invoke, app, ["streams", "apply", "--config", str(config)]
    )
    assert second.exit_code == 0, second.output
    assert "nothing to change" in second.output
    assert "created" not in second.output


async def test_a_config_copied_elsewhere_applies_the_built_in_definitions(
    bus: NatsBus, nats_server: NatsServerInfo, tmp_path: Path
) -> None:
    # cp config/sim.toml ~/mine.toml: no streams.toml beside it, and it names none.
    copy = tmp_path / "mine.toml"
    copy.write_text(
        (REPO / "config" / "sim.toml")
        .read_text()
        .replace(
            "[bus]\n",
            f'[bus]\nurl = "{nats_server.url}"\n'
            f'subject_prefix = "{bus.namespace.subject_prefix}"\n'
            f'stream_prefix = "{bus.namespace.stream_prefix}"\n',
            1,
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus.common.cli", "streams", "apply", "--config", "mine.toml",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert f"stream {bus.namespace.stream('MD')}: created" in out.decode()
    info = await bus.js.stream_info(bus.namespace.stream("MD"))
    assert info.config.subjects == [bus.namespace.subjects.market_data_all()]
