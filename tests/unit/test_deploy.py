"""deploy/: the compose files valid against the Compose Specification and true to the project.

No Docker engine here, so everything compose would only find out at ``docker compose up`` is
checked offline: the schema; healthchecks behind every ``service_healthy``; scalable services
without fixed names or host ports; pinned images; every ``command`` a real ``polybus`` command
whose options parse and whose mounted config passes ``polybus config check``; the metrics ports
the config gives, the ones compose exposes and the ones Prometheus scrapes being the same; the
dashboard reading only metrics the services export; the secrets each going only where needed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import typer
import typer.main
import yaml
from typer.testing import CliRunner

from polybus.common import __version__
from polybus.common.cli import _add_service, app, load
from polybus.common.config import Config, Deployment
from polybus.common.plugins import discover_plugins

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
LIVE_OVERRIDE = DEPLOY / "compose.live.yaml"
SCHEMA = REPO / "tests" / "resources" / "schemas" / "compose-spec.json"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
CONFIG_IN_CONTAINER = Path("/config")
NATS_SERVICE = "nats-server"
PRIVATE_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
PINNED = re.compile(r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]*)?(@sha256:[0-9a-f]{64})?")


def read_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return read_yaml(COMPOSE)


@pytest.fixture(scope="module")
def override() -> dict[str, Any]:
    return read_yaml(LIVE_OVERRIDE)


def polybus_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    """The services that run ``polybus ...``, with the arguments after ``polybus``."""
    return {
        name: service["command"][1:]
        for name, service in compose["services"].items()
        if (service.get("command") or [])[:1] == ["polybus"]
    }


def strategy_services(compose: dict[str, Any]) -> dict[str, str]:
    """Compose service -> the strategy id it runs (``polybus strategy --name ID``)."""
    return {
        name: argv[argv.index("--name") + 1]
        for name, argv in polybus_services(compose).items()
        if argv[0] == "strategy"
    }


def scalable(compose: dict[str, Any]) -> list[str]:
    return ["ingest", "recorder", *strategy_services(compose)]


def local_config(argv: list[str]) -> Path:
    """The repository's file behind ``--config /config/X`` (compose mounts config/ there)."""
    mounted = Path(argv[argv.index("--config") + 1])
    assert mounted.parent == CONFIG_IN_CONTAINER, f"{argv}: the config must come from /config"
    return REPO / "config" / mounted.name


# -- the Compose Specification and compose's own rules ---------------------------------------
@pytest.mark.parametrize("path", [COMPOSE, LIVE_OVERRIDE], ids=lambda p: p.name)
def test_compose_files_match_the_compose_specification(path: Path) -> None:
    # The schema says draft-07 (its $schema URL lacks the trailing "#" jsonschema looks for).
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(read_yaml(path))


def test_every_healthy_dependency_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if rule["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is one-shot"


def test_the_init_jobs_run_before_every_service(compose: dict[str, Any]) -> None:
    jobs = polybus_services(compose)
    assert jobs["streams-apply"][:2] == ["streams", "apply"]
    assert jobs["migrate"][:2] == ["db", "migrate"]
    for name in set(jobs) - {"streams-apply", "migrate"}:
        needs = compose["services"][name]["depends_on"]
        for job in ("streams-apply", "migrate"):
            assert needs[job]["condition"] == "service_completed_successfully", name


def test_scalable_services_have_no_fixed_names_or_host_ports(compose: dict[str, Any]) -> None:
    assert len(strategy_services(compose)) >= 2
    for name in scalable(compose):
        service = compose["services"][name]
        assert "container_name" not in service, name
        assert "ports" not in service, name
    # One account, one executor: its fixed name makes `--scale executor=2` fail loudly.
    assert compose["services"]["executor"]["container_name"]


def test_every_strategy_service_comes_from_one_anchor(compose: dict[str, Any]) -> None:
    services = [compose["services"][name] for name in strategy_services(compose)]
    shapes = [{k: v for k, v in s.items() if k != "command"} for s in services]
    assert all(shape == shapes[0] for shape in shapes), "strategy services differ beyond command"
    assert "x-strategy" in compose


def test_images_are_pinned(compose: dict[str, Any], override: dict[str, Any]) -> None:
    for name, service in [*compose["services"].items(), *override["services"].items()]:
        image = service.get("image")
        if image is None:
            assert name in override["services"], f"{name} has no image"
            continue
        assert PINNED.fullmatch(image), f"{name} image {image!r}"
        assert ":" in image.split("/")[-1] or "@sha256:" in image, f"{name} {image!r} has no tag"
        assert not image.split("@")[0].endswith(":latest"), f"{name} image {image!r} is latest"
    polybus = {s["image"] for s in compose["services"].values() if "build" in s}
    assert polybus == {f"polybus:{__version__}"}


def test_the_image_installs_every_workspace_member() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for member in [*REPO.glob("libs/*/pyproject.toml"), *REPO.glob("services/*/pyproject.toml")]:
        path = member.relative_to(REPO).as_posix()
        assert f"COPY {path} {path}" in dockerfile, f"the Dockerfile does not copy {path}"


# -- every command is a real polybus command on a valid config --------------------------------
@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    """The operator CLI with every installed service's commands, as ``polybus`` builds it."""
    registered = {c.name for c in app.registered_commands}
    for plugin in discover_plugins().values():
        if plugin.name not in registered:
            _add_service(plugin)
    return app


def parse(cli: typer.Typer, argv: list[str]) -> dict[str, Any]:
    """The parameters ``polybus <argv>`` would run with, or the CLI's own usage error."""
    command = typer.main.get_command(cli)
    args, parent, name = list(argv), None, "polybus"
    while hasattr(command, "get_command") and args and not args[0].startswith("-"):
        context = command.make_context(name, [], parent=parent, resilient_parsing=True)
        name = args.pop(0)
        sub = command.get_command(context, name)
        assert sub is not None, f"polybus {' '.join(argv)}: no command {name!r}"
        command, parent = sub, context
    assert not hasattr(command, "get_command"), f"polybus {' '.join(argv)} names a group"
    params: dict[str, Any] = command.make_context(name, args, parent=parent).params
    return params


Mount = Callable[..., Path]


@pytest.fixture
def as_mounted(tmp_path: Path) -> Mount:
    """A compose config as a container sees it: the Docker secret ``polybus`` is the example
    secrets file (what the compose header says to start from), plus a key for a live one."""

    def copy(config: Path, *, private_key: bool = False) -> Path:
        secrets = tmp_path / f"secrets-{config.stem}.toml"
        shutil.copy(REPO / "config" / "secrets.example.toml", secrets)
        if private_key:
            key = f'[polymarket]\nprivate_key = "{PRIVATE_KEY}"\n'
            secrets.write_text(secrets.read_text().replace("[polymarket]\n", key, 1))
        secrets.chmod(0o600)
        data = config.read_text()
        assert 'secrets_file = "/run/secrets/polybus"' in data, config
        target = tmp_path / config.name
        target.write_text(data.replace("/run/secrets/polybus", str(secrets)))
        return target

    return copy


def test_every_compose_command_is_a_polybus_command_that_accepts_its_options(
    compose: dict[str, Any], override: dict[str, Any], cli: typer.Typer
) -> None:
    commands = {**polybus_services(compose)}
    commands.update({f"{k} (live)": v for k, v in polybus_services(override).items()})
    assert commands
    for name, argv in commands.items():
        params = parse(cli, argv)
        assert "config" in params, f"{name}: polybus {' '.join(argv)} takes no --config"
        assert local_config(argv).is_file(), f"{name}: config/ has no {local_config(argv).name}"


def test_a_typo_in_a_command_would_be_caught(cli: typer.Typer) -> None:
    # The check above can fail: unknown commands and options are refused, not ignored.
    with pytest.raises(AssertionError, match="no command"):
        parse(cli, ["stratgy", "--name", "x"])
    with pytest.raises(Exception, match="--nme"):
        parse(cli, ["strategy", "--nme", "x"])


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to deploy/) of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            found[target] = source
    return found


def test_each_service_mounts_its_config_file_and_no_secret(
    compose: dict[str, Any], override: dict[str, Any]
) -> None:
    secret_files = {
        (DEPLOY / secret["file"]).resolve()
        for document in (compose, override)
        for secret in document["secrets"].values()
    }
    for document in (compose, override):
        for name, argv in polybus_services(document).items():
            service = {**compose["services"].get(name, {}), **document["services"][name]}
            mounted = {**mounts(compose["services"].get(name, {})), **mounts(service)}
            config = argv[argv.index("--config") + 1]
            assert (DEPLOY / mounted[config]).resolve() == local_config(argv), name
            for source in mounted.values():
                host = (DEPLOY / source).resolve()
                assert host.is_file(), f"{name} mounts {source}, not one file"
                assert host not in secret_files, f"{name} mounts the secret {source}"
                assert host != REPO / "config", f"{name} mounts config/ with its secrets"


def test_no_secret_goes_into_the_image(compose: dict[str, Any], override: dict[str, Any]) -> None:
    # deploy/Dockerfile copies config/ into the image; the build context's .dockerignore must
    # keep out every file a compose secret is read from.
    ignored = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith(("#", "!"))
    ]
    for document in (compose, override):
        for secret in document["secrets"].values():
            path = (DEPLOY / secret["file"]).resolve().relative_to(REPO).as_posix()
            assert any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path
    assert "COPY config /config" in (DEPLOY / "Dockerfile").read_text()


def test_every_mounted_config_passes_polybus_config_check(
    compose: dict[str, Any], override: dict[str, Any], cli: typer.Typer, as_mounted: Mount
) -> None:
    for argv in [*polybus_services(compose).values(), *polybus_services(override).values()]:
        config = as_mounted(local_config(argv))
        result = CliRunner().invoke(cli, ["config", "check", str(config)])
        assert result.exit_code == 0, f"{argv}: {result.output}"
        effective = json.loads(result.output)
        assert effective["bus"]["url"].startswith(f"nats://{NATS_SERVICE}:")
        assert "@timescaledb:" in effective["database"]["url"]


def test_each_strategy_service_runs_a_strategy_its_config_configures(
    compose: dict[str, Any], as_mounted: Mount
) -> None:
    from polybus.strategy.config import StrategyServiceSettings, configured
    from polybus.strategy.service import strategy_class

    runs = strategy_services(compose)
    for service, name in runs.items():
        config = load(as_mounted(local_config(polybus_services(compose)[service])))
        strategy_class(config, name)  # StrategyNotFound (exit 2) otherwise
        assert configured(config.section("strategy", StrategyServiceSettings)).keys() == set(
            runs.values()
        ), "every strategy the compose config sets up has a service, and no more"


def test_strategy_replicas_split_the_partitions_by_lease_said_explicitly() -> None:
    # The executor fences by lease; several replicas of one strategy need the leases on. The
    # compose config says so itself rather than lean on a default that may change.
    for name in ("compose.toml", "compose-live.toml"):
        data = tomllib.loads((REPO / "config" / name).read_text())
        assert data["strategy"]["partition_leases"] is True, name


def test_the_executor_trades_live_only_through_the_override(
    compose: dict[str, Any], override: dict[str, Any], as_mounted: Mount
) -> None:
    from polybus.executor.service import live_problem

    paper_argv = polybus_services(compose)["executor"]
    live_argv = polybus_services(override)["executor"]
    assert "--live" not in paper_argv
    assert "--live" in live_argv
    paper = load(as_mounted(local_config(paper_argv)))
    assert live_problem(paper, live=False) == ""
    assert "--live given" in live_problem(paper, live=True)
    live = load(as_mounted(local_config(live_argv), private_key=True))
    assert live_problem(live, live=True) == ""
    # Without the key the live executor refuses to start.
    assert "private_key" in live_problem(load(as_mounted(local_config(live_argv))), live=True)
    # The override changes the executor alone, and gives it the secret with the key.
    assert set(override["services"]) == {"executor"}
    [secret] = override["services"]["executor"]["secrets"]
    assert secret["target"] == "polybus"
    assert secret["source"] in override["secrets"]
    assert secret["source"] not in compose["secrets"]


def test_the_live_config_is_the_compose_config_but_for_the_executor_mode() -> None:
    paper = tomllib.loads((REPO / "config" / "compose.toml").read_text())
    live = tomllib.loads((REPO / "config" / "compose-live.toml").read_text())
    assert (paper["executor"]["mode"], live["executor"]["mode"]) == ("paper", "live")
    paper["executor"].pop("mode")
    live["executor"].pop("mode")
    assert paper == live


# -- NATS: JetStream, auth on, monitoring private, the nats CLI ------------------------------
def test_nats_runs_jetstream_with_auth_and_keeps_monitoring_private(
    compose: dict[str, Any],
) -> None:
    server = compose["services"][NATS_SERVICE]
    assert "ports" not in server, "the monitoring port has no auth: never publish it"
    assert "js-enabled-only=true" in " ".join(server["healthcheck"]["test"])
    assert server["secrets"] == ["nats_password"]
    conf = (DEPLOY / "nats.conf").read_text()
    assert "jetstream" in conf
    assert re.search(r"authorization\s*\{[^}]*password:\s*\$NATS_PASSWORD", conf)
    mounted = {volume.split(":")[1] for volume in server["volumes"]}
    assert "/etc/nats/nats.conf" in mounted
    assert "/data" in mounted
    assert "store_dir: /data" in conf


def test_the_tools_profile_has_the_nats_cli_logged_in(compose: dict[str, Any]) -> None:
    tool = compose["services"]["nats"]
    assert tool["profiles"] == ["tools"]
    assert tool["image"].startswith("natsio/nats-box:")
    assert tool["environment"]["NATS_URL"] == f"nats://{NATS_SERVICE}:4222"
    assert tool["secrets"] == ["nats_password"]
    # `docker compose --profile tools run nats sub 'md.>'`: the arguments reach `nats`.
    assert tool["entrypoint"][-1] == "nats"
    assert 'exec nats "$$@"' in tool["entrypoint"][2]
    assert "--profile tools run --rm nats sub 'md.>'" in COMPOSE.read_text()


def test_every_secret_goes_only_where_it_is_needed(compose: dict[str, Any]) -> None:
    users: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            users.setdefault(source, set()).add(name)
    assert users.keys() == compose["secrets"].keys()
    assert users["grafana_admin_password"] == {"grafana"}
    assert users["postgres_password"] == {"timescaledb"}
    assert users["nats_password"] == {NATS_SERVICE, "nats"}
    assert users["polybus"] == set(polybus_services(compose))
    grafana = compose["services"]["grafana"]
    assert "grafana_admin_password" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    # The polybus secrets file of the base compose file holds no private key (only the live
    # override's does), and the example it is made from has none set.
    example = tomllib.loads((REPO / "config" / "secrets.example.toml").read_text())
    assert "private_key" not in example.get("polymarket", {})


# -- metrics: config, compose, Prometheus and the dashboard agree -----------------------------
def metrics_port(config: Config, argv: list[str]) -> int:
    from polybus.common.config import ServiceSettings

    if argv[0] == "strategy":
        from polybus.strategy.config import StrategyServiceSettings, configured, runtime_keys

        table = configured(config.section("strategy", StrategyServiceSettings))[argv[2]]
        return runtime_keys(table).metrics_port
    settings = config.section(argv[0], ServiceSettings)
    assert settings.metrics_host == "0.0.0.0", f"{argv[0]} is not reachable from Prometheus"
    return settings.metrics_port


def test_prometheus_scrapes_every_service_that_exports_metrics_on_its_port(
    compose: dict[str, Any], as_mounted: Mount
) -> None:
    prometheus = read_yaml(DEPLOY / "prometheus.yml")
    scraped = {
        (name, config["port"])
        for job in prometheus["scrape_configs"]
        for config in job.get("dns_sd_configs", [])
        for name in config["names"]
    }
    long_running = {
        name: argv
        for name, argv in polybus_services(compose).items()
        if compose["services"][name].get("restart") != "no"
    }
    assert {"ingest", "recorder", "executor", *strategy_services(compose)} <= set(long_running)
    for name, argv in long_running.items():
        service = compose["services"][name]
        port = metrics_port(load(as_mounted(local_config(argv))), argv)
        assert service["expose"] == [str(port)], f"{name} exposes {service['expose']}, not {port}"
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"]), name
        assert (name, port) in scraped, f"Prometheus does not scrape {name}:{port}"


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_dashboards_have_stable_uids_and_use_the_provisioned_datasource() -> None:
    datasource = read_yaml(DATASOURCES)["datasources"][0]
    found = dashboards()
    assert found
    assert len({d["uid"] for d in found}) == len(found)
    for dashboard in found:
        assert re.fullmatch(r"polybus-[a-z-]+", dashboard["uid"])
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
        assert {p["datasource"]["uid"] for p in panels} == {datasource["uid"]}
        assert all(p["targets"] for p in panels), "a panel without a query"


def test_every_dashboard_metric_exists() -> None:
    from prometheus_client import REGISTRY

    import polybus.common.metrics
    import polybus.executor.metrics
    import polybus.ingest.metrics
    import polybus.recorder.metrics
    import polybus.strategy.metrics  # noqa: F401 - registers the services' metrics

    suffixes = ("", "_total", "_bucket", "_count", "_sum")
    known = {
        f"{metric.name}{suffix}"
        for metric in REGISTRY.collect()
        if metric.name.startswith("polybus_")
        for suffix in suffixes
    }
    for dashboard in dashboards():
        for title, expr in queries(dashboard):
            used = set(re.findall(r"polybus_[a-z_]+", expr))
            assert used, f"{title!r}: {expr!r} reads no polybus metric"
            assert used <= known, f"{title!r} reads {sorted(used - known)}, which nobody exports"


def test_the_dashboard_covers_feed_strategies_executor_and_recorder() -> None:
    [overview] = [d for d in dashboards() if d["uid"] == "polybus-overview"]
    exprs = " ".join(expr for _, expr in queries(overview))
    for metric in (
        "polybus_ingest_frames",
        "polybus_ingest_lag_seconds",
        "polybus_ingest_sockets_connected",
        "polybus_ingest_assets",
        "polybus_ingest_resyncs",
        "polybus_ingest_batch_checks",
        "polybus_strategy_intents",
        "polybus_strategy_places",
        "polybus_strategy_edge_ticks",
        "polybus_strategy_partitions_held",
        "polybus_executor_orders",
        "polybus_executor_rejects",
        "polybus_executor_ack_seconds",
        "polybus_executor_venue_heartbeat_ok",
        "polybus_executor_halted",
        "polybus_executor_throttle_wait_seconds",
        "polybus_executor_position_value_micros",
        "polybus_executor_realized_pnl_micros",
        "polybus_recorder_rows_written",
        "polybus_recorder_consumer_lag_messages",
    ):
        assert metric in exprs, f"the overview shows no {metric}"


# -- what the README and compose promise ------------------------------------------------------
def test_scaling_the_ingest_is_offered_only_where_its_instances_split_the_markets() -> None:
    # `--scale ingest=N` is safe because the compose config makes every ingest a lease member:
    # each market partition is followed by one of them at a time (tests/integration/
    # test_ingest_scale.py), over the LEASES bucket the streams file defines with a TTL.
    from polybus.common.config import BUILTIN_STREAMS_FILE
    from polybus.common.leases import LEASE_BUCKET
    from polybus.common.streams import load_definitions
    from polybus.ingest.config import IngestSettings

    for document in (REPO / "README.md", COMPOSE):
        assert "--scale ingest=" in document.read_text(), document
    data = tomllib.loads((REPO / "config" / "compose.toml").read_text())
    assert msgspec.convert(data["ingest"], IngestSettings).split_markets
    buckets = {b.name: b for b in load_definitions(BUILTIN_STREAMS_FILE).bucket}
    assert buckets[LEASE_BUCKET].ttl_s > 0
    assert buckets[LEASE_BUCKET].storage == "file"


def test_the_compose_config_names_the_compose_servers() -> None:
    for name in ("compose.toml", "compose-live.toml"):
        data = tomllib.loads((REPO / "config" / name).read_text())
        common = {k: v for k, v in data.items() if k in Deployment.__struct_fields__}
        deployment = msgspec.convert(common, Deployment)
        assert deployment.bus.url == f"nats://{NATS_SERVICE}:4222", name
        assert deployment.database.url == "postgresql://polybus@timescaledb:5432/polybus", name
        assert deployment.secrets_file == "/run/secrets/polybus", name
