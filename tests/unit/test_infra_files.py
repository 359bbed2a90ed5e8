"""The container files agree with what infra/README.md promises: multi-stage non-root images with a health check,
and a stack where every service restarts, has a health check and starts after what it needs is healthy.
(`make compose-test` builds and runs them; this keeps them from drifting between its runs.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
FEDAI_SERVICES = {"relay", "router", "node-1", "node-2"}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    return document


def test_the_fedai_image_is_built_in_one_stage_and_runs_unprivileged_in_another() -> None:
    text = (INFRA / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.MULTILINE)
    assert [s[0] for s in stages] == ["${BASE}", "${BASE}"] and stages[0][1] == "builder", stages
    runtime = text.split("\nFROM ${BASE}\n", 1)[1]
    assert "COPY --from=builder /wheels" in runtime and "pip wheel" not in runtime
    assert re.search(r"^USER fedai$", runtime, re.MULTILINE) and "HEALTHCHECK" in runtime
    assert "ARG BASE=fedai-base:bookworm" in text  # the local debootstrap image, never a registry's


def test_every_service_restarts_is_health_checked_and_waits_for_what_it_needs() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "prometheus", "llama-1", "llama-2", *FEDAI_SERVICES}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert "registry" not in service["image"] and service["image"].startswith("${"), name
        for needed, how in service.get("depends_on", {}).items():
            assert how == {"condition": "service_healthy"}, (name, needed)
    for dockerfile in ("Dockerfile", *(f"images/{n}.Dockerfile" for n in ("postgres", "prometheus", "llama"))):
        assert "\nHEALTHCHECK " in (INFRA / dockerfile).read_text(), dockerfile
    assert set(services["router"]["depends_on"]) == {"postgres", "relay"}
    assert set(services["node-1"]["depends_on"]) == {"router", "llama-1"}
    assert set(services["node-2"]["depends_on"]) == {"router", "llama-2"}


def test_the_nodes_run_on_llama_cpp_each_on_its_own_server() -> None:
    services = compose()["services"]
    for n in (1, 2):
        node = services[f"node-{n}"]["environment"]
        assert node["NODE_RUNNER"] == "llama_cpp" and node["NODE_RUNNER_URL"] == f"http://llama-{n}:8085"


def test_the_router_waits_for_its_database_and_publishes_on_loopback_only() -> None:
    router = compose()["services"]["router"]
    assert float(router["environment"]["ROUTER_DB_WAIT_S"]) > 0
    assert all(port.startswith("127.0.0.1:") for port in router["ports"])
    assert router["stop_grace_period"] == "40s"  # above ROUTER_DRAIN_TIMEOUT_S (30 s)
