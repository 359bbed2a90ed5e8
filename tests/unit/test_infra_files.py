"""The container files agree with what infra/README.md promises: multi-stage non-root images with a health check,
and a stack where every service restarts, has a health check and starts after what it needs is healthy.
The paid override (docker-compose.paid.yml) adds LNbits and one-shot set-up services that the router and the
nodes wait for, and leaves the default stack unpaid.
(`make compose-test` and `make compose-test-paid` build and run them; this keeps them from drifting between runs.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
FEDAI_SERVICES = {"relay", "router", "node-1", "node-2"}


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((INFRA / name).read_text())
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


ONE_SHOTS = {"lnbits-wallets", "node-databases"}


def test_the_paid_override_adds_lnbits_and_its_set_up_before_the_router_and_nodes() -> None:
    paid = compose("docker-compose.paid.yml")["services"]
    assert set(paid) == {"lnbits", *ONE_SHOTS, "router", "node-1", "node-2"}
    lnbits = paid["lnbits"]
    assert lnbits["restart"] == "unless-stopped" and lnbits["image"].startswith("${")
    assert all(port.startswith("127.0.0.1:") for port in lnbits["ports"])
    image = (INFRA / "images" / "lnbits.Dockerfile").read_text()
    assert "\nHEALTHCHECK " in image and re.search(r"^USER lnbits$", image, re.MULTILINE)
    assert "ARG BASE=fedai-base:bookworm" in image and "LNBITS_BACKEND_WALLET_CLASS=FakeWallet" in image
    for name in ONE_SHOTS:  # run once per `up`, after what they need is healthy
        assert paid[name]["restart"] == "no" and paid[name]["healthcheck"] == {"disable": True}, name
        assert all(how == {"condition": "service_healthy"} for how in paid[name]["depends_on"].values()), name
    assert set(paid["lnbits-wallets"]["depends_on"]) == {"lnbits"}
    assert set(paid["node-databases"]["depends_on"]) == {"postgres"}
    done = {"condition": "service_completed_successfully"}
    assert paid["router"]["depends_on"] == {"lnbits-wallets": done}
    for node in ("node-1", "node-2"):
        assert paid[node]["depends_on"] == {"lnbits-wallets": done, "node-databases": done}


def test_every_wallet_a_paid_service_names_is_one_the_set_up_provides() -> None:
    paid = compose("docker-compose.paid.yml")["services"]
    command = paid["lnbits-wallets"]["command"]
    assert command[:4] == ["lnbits", "provision", "http://lnbits:5000", "/wallets"]
    provided = {f"/wallets/{arg.split('=')[0]}.uri" for arg in command[4:] if not arg.startswith("--")}
    named = {
        paid["router"]["environment"]["ROUTER_WALLET"],
        *(paid[node]["environment"]["NODE_WALLET"] for node in ("node-1", "node-2")),
    }
    assert len(named) == 3 and named < provided
    assert paid["router"]["environment"]["ROUTER_REQUIRE_PAYMENT"] == "true"
    for name in ("router", "node-1", "node-2"):
        assert paid[name]["volumes"] == ["wallets:/wallets:ro"], name
    for node in ("node-1", "node-2"):
        env = paid[node]["environment"]
        assert env["NODE_REQUIRE_PAYMENT"] == "true" and env["NODE_DB_URL"].endswith(f"/fedai_node_{node[-1]}")
        # LNbits invoices whole satoshis: prices per 1,000 tokens are whole sats per token
        assert (
            int(env["NODE_PRICE_INPUT_MSAT"]) % 1_000_000 == 0 and int(env["NODE_PRICE_OUTPUT_MSAT"]) % 1_000_000 == 0
        )
    assert int(paid["router"]["environment"]["ROUTER_FEE_BASE_MSAT"]) % 1000 == 0
    assert paid["router"]["environment"]["ROUTER_FEE_PPM"] == "0"


def test_the_default_stack_stays_unpaid() -> None:
    services = compose()["services"]
    for name in ("router", "node-1", "node-2"):
        env = services[name]["environment"]
        assert not {"ROUTER_REQUIRE_PAYMENT", "NODE_REQUIRE_PAYMENT", "ROUTER_WALLET", "NODE_WALLET"} & set(env), name
