"""Tracing is off unless OTEL_* asks for it (then nothing is installed and no exporter thread runs); the
traceparent goes into headers only when there is a trace; the light SDK never loads the OpenTelemetry SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from fedai.observability.tracing import (
    TracingConfigError,
    inject,
    request_spans,
    setup_tracing,
    tracing_requested,
)


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "router-a"}, False),  # naming the service is not asking for traces
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_named(env: dict[str, str], wanted: bool) -> None:
    assert tracing_requested(env) is wanted


PROBE = """
import json, threading
from opentelemetry import trace
from fedai.observability.tracing import inject, request_spans, setup_tracing, span, tracing_active
provider = setup_tracing("fedai-router")
with span("router.node_call", kind="client"):
    carried = dict(inject({}))
state = {
    "inject": sorted(carried),
    "provider": type(trace.get_tracer_provider()).__name__,
    "active": tracing_active(),
    "middleware": len(request_spans("router.request")),
    "threads": sorted(t.name for t in threading.enumerate()),
}
print(json.dumps(state))
if provider is not None:
    provider.shutdown()
"""


def _probe(**otel: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | otel
    ran = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(ran.stdout)
    return result


def test_with_otel_unset_no_provider_is_installed_and_no_exporter_thread_runs() -> None:
    off = _probe()
    assert off == {
        "inject": [],  # no trace context goes out either
        "provider": "ProxyTracerProvider",
        "active": False,
        "middleware": 0,
        "threads": ["MainThread"],
    }


def test_with_an_endpoint_the_sdk_provider_and_its_exporter_thread_run() -> None:
    on = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert (on["provider"], on["active"], on["middleware"], on["inject"]) == (
        "TracerProvider",
        True,
        1,
        ["traceparent"],
    )
    assert on["threads"] == ["MainThread", "OtelBatchSpanRecordProcessor"]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin"),
    ],
)
def test_an_exporter_this_build_lacks_is_a_config_error_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(TracingConfigError, match=variable):
        setup_tracing("fedai-router", env)
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing was installed


def test_inject_copies_nothing_while_tracing_is_off() -> None:
    headers = {"Content-Type": "application/json"}
    context = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(context)):  # a caller's context: not forwarded while off
        assert inject(headers) is headers


def test_no_request_middleware_while_tracing_is_off() -> None:
    assert request_spans("router.request") == []  # this process installed no provider


def test_the_sdk_loads_the_opentelemetry_api_only() -> None:
    code = "import sys, fedai.sdk; print(' '.join(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = ran.stdout.split()
    assert "opentelemetry.trace" in loaded
    assert not [m for m in loaded if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]


def test_a_service_with_a_bad_otel_variable_stops_at_start_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NODE_", "ROUTER_"))}
    env |= {
        "NODE_PRIVATE_KEY": "11" * 32,
        "NODE_RUNNER": "mock",
        "NODE_PORT": "1",  # never bound: the OTEL_* check comes first
        "ROUTER_ENDPOINT": "http://127.0.0.1:9",
        "ROUTER_PUBLIC_KEY": "aa" * 32,
        "OTEL_TRACES_EXPORTER": "zipkin",
    }
    ran = subprocess.run(
        [sys.executable, "-m", "fedai_node"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 2
    assert ran.stderr.strip() == "config error: OTEL_TRACES_EXPORTER=zipkin: supported are otlp, console and none"
