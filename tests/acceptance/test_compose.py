"""docker/compose.yaml, its Dockerfile, Prometheus and Grafana files: each app service's command, run as written.

The docker engine is not needed: every app service's command is started here
against the test's own PostgreSQL database and Redis, with the environment
the compose file gives it (the database and broker URLs pointing at them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import ROOT
from tests.acceptance.helpers import free_port, wait_all_finished, wait_until
from workflow_celery import SQLStore, Workflow
from workflow_celery.adapters.prometheus import DatabaseCollector, PrometheusMetrics
from workflow_celery.adapters.sql import migrate

DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def app_services() -> dict[str, dict[str, Any]]:
    """The services built from docker/Dockerfile (the YAML anchors resolved)."""
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def test_the_app_services_commands_are_the_ones_the_docs_show() -> None:
    docs = (ROOT / "docs" / "docker.md").read_text()
    services = app_services()
    assert set(services) == {"migrate", "worker-steps", "worker-hooks", "flower", "metrics", "ui"}
    for name, svc in services.items():
        assert f"`{' '.join(svc['command'])}`" in docs, name
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert json.loads(cmd) == services["worker-steps"]["command"]
    assert "pip install '.[redis,flower,ui]'" in dockerfile
    extras = re.findall(r"^(\w+) = \[", (ROOT / "pyproject.toml").read_text(), re.M)
    assert {"redis", "flower", "ui"} <= set(extras)
    for name in ("worker-steps", "worker-hooks", "flower", "metrics", "ui"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["migrate"]["restart"] == "no"


def test_prometheus_scrapes_the_services_and_ports_of_the_compose_file() -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    services = app_services()
    for target in targets:
        host, port = target.split(":")
        svc = services[host]
        served = svc["environment"].get("WORKFLOW_CELERY_METRICS_PORT")
        if served is None:
            served = svc["command"][svc["command"].index("--port") + 1]
        assert served == port, target
    assert sorted(t.split(":")[0] for t in targets) == ["metrics", "worker-hooks", "worker-steps"]
    mounted = compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounted


def exposed_metric_names() -> set[str]:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    names = {m.name for m in registry.collect()}
    names |= {m.name for m in DatabaseCollector([]).collect()}
    return names


def test_the_dashboard_queries_only_metrics_the_library_exposes() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "workflow-celery.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum|total)$", "", n) for e in exprs for n in re.findall(r"\bworkflow_[a-z_]+(?=\{)", e)
    }
    exposed = {re.sub(r"_(total)$", "", n) for n in exposed_metric_names()}
    assert used and used <= exposed, used - exposed
    assert {"workflow_runs", "workflow_process_latency_seconds", "workflow_process_lag_alert"} <= used
    provisioning = DOCKER / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert all(p["datasource"]["uid"] == datasource["uid"] for p in dashboard["panels"])


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose command is not installed here")
    out = subprocess.run(
        [docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"],
        env={**os.environ, "FLOWER_PASSWORD": "x"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


class Service:
    """An app service's command, started as the compose file writes it (the executable from this venv)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / command[0]), *command[1:]],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def answering(url: str) -> bool:
    try:
        get(url)
    except OSError:
        return False
    return True


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for svc in started:
        svc.stop()


@pytest.mark.parametrize("broker", ["redis"])
def test_each_app_service_runs_its_command_as_written(
    pg_database: str,
    broker_url: str,
    orders: Workflow[Order, OrderStatus],
    store: SQLStore,
    services: list[Service],
    tmp_path: Path,
) -> None:
    defined = app_services()
    ports = {name: free_port() for name in ("worker-steps", "worker-hooks", "flower", "metrics", "ui")}

    def env_of(name: str) -> dict[str, str]:
        env = {**os.environ, **{k: str(v) for k, v in defined[name]["environment"].items()}}
        env["WORKFLOW_CELERY_DATABASE_URL"], env["CELERY_BROKER_URL"] = pg_database, broker_url
        if "WORKFLOW_CELERY_UI_TOKEN" in env:
            env["WORKFLOW_CELERY_UI_TOKEN"] = "a-token-of-the-compose-test"
        if "WORKFLOW_CELERY_METRICS_PORT" in env and name in ports:
            env["WORKFLOW_CELERY_METRICS_PORT"] = str(ports[name])
            multiproc = tmp_path / f"prom-{name}"  # the image's PROMETHEUS_MULTIPROC_DIR
            multiproc.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
        return env

    def command_of(name: str) -> list[str]:
        command = [str(a) for a in defined[name]["command"]]
        command = [a.replace("${FLOWER_PASSWORD:?set FLOWER_PASSWORD}", "s3cret") for a in command]
        command = [a.replace("--port=5555", f"--port={ports['flower']}") for a in command]
        if "--port" in command:
            command[command.index("--port") + 1] = str(ports[name])
        return command

    with (tmp_path / "migrate.log").open("wb") as log:
        migrated = subprocess.run(
            [str(BIN / "workflow-celery"), *command_of("migrate")[1:]],
            cwd=ROOT, env=env_of("migrate"), stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False,
        )  # fmt: skip
    assert migrated.returncode == 0, (tmp_path / "migrate.log").read_text()
    assert migrate.current(pg_database) == migrate.head()

    for name in ("worker-steps", "worker-hooks", "flower", "metrics", "ui"):
        services.append(Service(name, command_of(name), env_of(name), tmp_path / f"{name}.log"))
    steps, hooks = services[:2]
    for worker in (steps, hooks):
        wait_until(lambda w=worker: " ready." in w.output(), 90, f"{worker.name} to be ready")
    consumed = {w.name: set(re.findall(r"^\s*\.> (\S+)\s+exchange=", w.output(), re.M)) for w in (steps, hooks)}
    assert consumed["worker-steps"] and all(".hooks." not in q for q in consumed["worker-steps"])
    assert consumed["worker-hooks"] and all(".hooks." in q for q in consumed["worker-hooks"])

    run_id = orders.trigger("compose-1", initial_value=Order(id="compose-1", items=["a"], total=3.0))
    wait_all_finished(orders, [run_id], timeout=120)
    wait_until(lambda: "order-processing.hooks.completed[" in hooks.output(), 60, "the completed hook to run")

    flower_url = f"http://127.0.0.1:{ports['flower']}/"
    wait_until(lambda: answering(flower_url), 90, "Flower to answer")
    assert get(flower_url)[0] == 401
    assert get(flower_url, auth="ops:s3cret")[0] == 200

    metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
    wait_until(lambda: answering(metrics_url), 60, "the metrics service to answer")
    runs = get(metrics_url)[1]
    done = 'workflow_runs{run_state="COMPLETED",status="FULFILLED",workflow_name="order-processing"} 1.0'
    assert done in runs, runs
    steps_metrics = get(f"http://127.0.0.1:{ports['worker-steps']}/metrics")[1]
    assert re.search(
        r'workflow_process_latency_seconds_count\{[^}]*process_name="order-processing.created"', steps_metrics
    )
    hooks_metrics = get(f"http://127.0.0.1:{ports['worker-hooks']}/metrics")[1]
    assert "workflow_hook_executions_total{" in hooks_metrics

    ui_url = f"http://127.0.0.1:{ports['ui']}"
    wait_until(lambda: answering(f"{ui_url}/login"), 60, "the UI to answer")
    assert "log in" in get(f"{ui_url}/runs")[1].lower()  # sent to the login form
    request = urllib.request.Request(f"{ui_url}/runs", headers={"Authorization": "Bearer a-token-of-the-compose-test"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert "compose-1" in response.read().decode()
