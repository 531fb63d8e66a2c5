"""The docker-compose deployment, checked without a Docker engine.

Parses ``docker-compose.yml`` and the files under ``deploy/`` and checks that they fit the
code: the production shape (KRaft Kafka, PostgreSQL, a Confluent Schema Registry the roles
use, a topics job, the API, scalable matcher and worker, Prometheus, Grafana), every
``portability`` command they run exists in the CLI, every ``PORTABILITY_*`` variable is a
setting with a valid value, Prometheus scrapes every role where it serves ``/metrics``, and
every PromQL expression of the alert rules and the dashboard names metrics (and labels) that
the code exports.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from portability.cli import app as cli
from portability.consent import create_store_engine, init_schema
from portability.ops.metrics import SPECS, api_registry, exported_names, worker_registry
from portability.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "portability.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = (
    ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "portability.yml"
)

PIPELINE = {"kafka", "postgres", "topics", "api", "matcher", "worker", "prometheus", "grafana"}
PIPELINE |= {"schema-registry"}
ROLES = ("api", "matcher", "worker", "transfers")
# Labels Prometheus adds to every scraped series, and the histogram's bucket label.
TARGET_LABELS = {"job", "instance"}
_INTERPOLATION = re.compile(r"^\$\{(\w+)(?::?[?-][^}]*)?\}$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE)
    return document


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name the code exports, collected from the processes' registries."""
    engine = create_store_engine(f"sqlite:///{tmp_path_factory.mktemp('store') / 'c.db'}")
    init_schema(engine)
    try:
        registries = [worker_registry(lambda: None, lambda: None), api_registry(engine)]
        return exported_names(registries) | {"up"}  # up: Prometheus's own, per target
    finally:
        engine.dispose()


def portability_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the portability image (built from the Dockerfile)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


# --- compose ---------------------------------------------------------------------------------


def test_compose_runs_the_production_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= PIPELINE
    kafka = environment(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft: no ZooKeeper
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka
    assert not any("zookeeper" in name for name in services)
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["topics"]["restart"] == "no"
    for name in ("api", "matcher", "worker", "transfers"):
        waits_for = services[name]["depends_on"]["topics"]["condition"]
        assert waits_for == "service_completed_successfully", name
    for name in ("matcher", "worker", "transfers"):
        # Scalable: `--scale` needs containers without a fixed name or host port.
        assert "container_name" not in services[name], name
        assert "ports" not in services[name], name
    assert portability_services(compose).keys() == {
        "topics",
        "api",
        "matcher",
        "worker",
        "transfers",
    }


def test_the_roles_use_the_compose_schema_registry(compose: dict[str, Any]) -> None:
    services = compose["services"]
    registry = services["schema-registry"]
    env = environment(registry)
    assert registry["image"].startswith("confluentinc/cp-schema-registry:")
    # It keeps its schemas in the compose Kafka, on a topic one broker can hold.
    assert env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].split("://")[-1] == "kafka:9092"
    assert env["SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR"] == "1"
    assert registry["depends_on"]["kafka"]["condition"] == "service_healthy"
    listener = env["SCHEMA_REGISTRY_LISTENERS"]
    port = listener.rsplit(":", 1)[1]
    assert listener.startswith("http://")
    assert port == "8081"
    check = " ".join(registry["healthcheck"]["test"])
    assert f"localhost:{port}/" in check
    for name in ROLES:
        url = environment(services[name])["PORTABILITY_SCHEMA_REGISTRY_URL"]
        assert url == f"http://schema-registry:{port}", name
        waits_for = services[name]["depends_on"]["schema-registry"]["condition"]
        assert waits_for == "service_healthy", name


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's commands by name; None for a command (typer vendors its own click)."""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def _cli_command(tokens: list[str]) -> Any:
    """The CLI command ``portability TOKENS...`` runs, or None if there is none."""
    command: Any = typer.main.get_group(cli)
    for token in tokens:
        subcommands = _subcommands(command)
        if token.startswith("-") or subcommands is None:
            break
        command = subcommands.get(token)
        if command is None:
            return None
    return command


def test_every_command_exists_in_the_cli(compose: dict[str, Any]) -> None:
    assert _cli_command(["topics", "create"]) is not None  # the check itself finds commands
    assert _cli_command(["topics", "nonsense"]) is None
    for name, service in portability_services(compose).items():
        tokens = [str(token) for token in service["command"]]
        command = _cli_command(tokens)
        assert command is not None, f"{name} runs `portability {' '.join(tokens)}`: no such command"
        assert _subcommands(command) is None, f"{name} runs a command group, not a command"


def test_every_portability_variable_is_a_valid_setting(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {f"PORTABILITY_{name.upper()}" for name in Settings.model_fields}
    for name, service in portability_services(compose).items():
        env = environment(service)
        unknown = {key for key in env if key.startswith("PORTABILITY_")} - known
        assert not unknown, f"{name} sets {unknown}: not settings"
        assert env["PORTABILITY_DEVELOPMENT_MODE"] == "false", name
        assert env["PORTABILITY_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        for key in [key for key in os.environ if key.startswith("PORTABILITY_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("PORTABILITY_"):
                interpolated = _INTERPOLATION.match(value)
                # A variable the operator must set: any valid value stands in for it.
                monkeypatch.setenv(key, "x" * 32 if interpolated else value)
        settings = Settings()  # the values parse, as they would in the container
        assert settings.development_mode is False
        assert settings.webhook_allow_loopback is False


def test_secrets_come_from_the_operator(compose: dict[str, Any]) -> None:
    api = environment(compose["services"]["api"])
    for key in ("PORTABILITY_API_PLATFORM_TOKEN", "PORTABILITY_API_OPERATOR_TOKEN"):
        assert _INTERPOLATION.match(api[key]), f"{key} must be required from the environment"
    # The key sealing apps' signing secrets: the API and the workers hold it, no other role.
    for name, service in portability_services(compose).items():
        sealing_key = environment(service).get("PORTABILITY_SECRETS_KEY")
        if name in ("api", "worker"):
            assert sealing_key is not None, f"{name} needs PORTABILITY_SECRETS_KEY"
            assert _INTERPOLATION.match(sealing_key), "PORTABILITY_SECRETS_KEY must be required"
        else:
            assert sealing_key is None, f"{name} has no use for the secrets key"
    grafana = environment(compose["services"]["grafana"])
    assert _INTERPOLATION.match(grafana["GF_SECURITY_ADMIN_PASSWORD"])


# --- prometheus ------------------------------------------------------------------------------


def test_prometheus_scrapes_every_role_where_it_serves_metrics(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = compose["services"]
    api_port = environment(services["api"])["PORTABILITY_API_PORT"]
    assert jobs["portability-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    for role in ("matcher", "worker"):
        job = jobs[f"portability-{role}"]
        assert job["metrics_path"] == "/metrics"
        (discovery,) = job["dns_sd_configs"]  # every container of the scaled service
        assert discovery["names"] == [role]
        assert str(discovery["port"]) == environment(services[role])["PORTABILITY_WEB_PORT"]
        assert environment(services[role])["PORTABILITY_WEB_HOST"] == "0.0.0.0"  # noqa: S104
    mounted = _mounts(services["prometheus"])
    for rule_file in config["rule_files"]:
        assert rule_file in mounted, f"{rule_file} is not mounted into the prometheus container"
        assert mounted[rule_file].exists()
    assert mounted["/etc/prometheus/prometheus.yml"] == PROMETHEUS


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> file on the host, for the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def test_alert_rules_cover_lag_dead_letters_and_disabled_endpoints(exported: set[str]) -> None:
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {
        "PortabilityConsumerLagGrowing",
        "PortabilityConsumerStalled",
        "PortabilityDeadLetters",
        "PortabilityEndpointDisabled",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        check_expression(rule["expr"], exported, rule["alert"])


# --- grafana ---------------------------------------------------------------------------------


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def test_dashboard_queries_name_exported_metrics(
    compose: dict[str, Any], exported: set[str]
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    provider = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]
    assert _mounts(compose["services"]["grafana"])[provider["options"]["path"]] == DASHBOARD.parent
    panels = [p for p in dashboard_panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(panels) >= 10
    expressions = 0
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            check_expression(target["expr"], exported, panel["title"])
            expressions += 1
    assert expressions >= len(panels)
    ids = [panel["id"] for panel in dashboard_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


# --- PromQL ----------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("(") or match[0].lower() in _KEYWORDS:
            continue  # a function or an aggregation
        names.add(match[0])
    return names


def _labels_of(sample_name: str) -> set[str]:
    for spec in SPECS.values():
        if sample_name in spec.sample_names:
            extra = {"le"} if spec.kind == "histogram" else set()
            return set(spec.labels) | extra | TARGET_LABELS
    return TARGET_LABELS  # up


def check_expression(expr: str, exported: set[str], where: str) -> None:
    """Every metric the expression names is exported, with the labels it matches on."""
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - exported
    assert not unknown, f"{where}: {sorted(unknown)} are not exported by the code"
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for name, matchers in _SELECTOR.findall(stripped):
        labels = set(_MATCHER.findall(matchers))
        assert labels <= _labels_of(name), f"{where}: {name} has no label(s) {labels}"
    available = set().union(*(_labels_of(name) for name in names))
    for grouping in _GROUPING.findall(stripped):
        labels = {label.strip() for label in grouping.split(",") if label.strip()}
        assert labels <= available, f"{where}: grouping by {labels - available}, not labels"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (app) (rate(a_total{result="ok"}[5m])) / sum by (app) (rate(a_total[5m]))',
            {"a_total"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 60", {"h_bucket"}),
        ("count(max by (app) (d == 1)) or vector(0)", {"d"}),
        ('up{job=~"portability-.*"} == 0', {"up"}),
        ("min_over_time(p[5m]) > 0 and on (x) q", {"p", "q"}),
    ],
)
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
