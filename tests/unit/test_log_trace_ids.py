"""A log line written inside a traced span carries that span's trace and span ids (hex, as trace backends show
them); outside a span, or with tracing off, it carries none. Each case runs in its own process: a tracer
provider, once installed, cannot be removed."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.services import base_env

PROGRAM = """
import logging, sys
from opentelemetry import trace
from fedai.observability.logging import setup_logging
from fedai.observability.tracing import setup_tracing, span
provider = setup_tracing("fedai-router")
setup_logging("fedai-router")
log = logging.getLogger("fedai.router")
log.info("outside")
with span("router.request", kind="server"):
    context = trace.get_current_span().get_span_context()
    with span("router.dispatch_attempt"):
        inner = trace.get_current_span().get_span_context()
        log.info("inside", extra={"prompt": "never logged"})
        print("ids", format(context.trace_id, "032x"), format(inner.span_id, "016x"), context.is_valid)
if provider is not None:
    provider.shutdown()
"""


def _run(env: dict[str, str]) -> tuple[list[str], dict[str, dict[str, object]]]:
    ran = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={**{k: v for k, v in base_env().items() if not k.startswith("OTEL_")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    [ids] = [line.split()[1:] for line in ran.stdout.splitlines() if line.startswith("ids ")]
    return ids, {str(line["msg"]): line for line in lines if line["msg"] in ("inside", "outside")}


def test_a_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    (trace_id, span_id, valid), lines = _run({"OTEL_TRACES_EXPORTER": "console"})
    assert valid == "True" and len(trace_id) == 32
    assert (lines["inside"]["trace_id"], lines["inside"]["span_id"]) == (trace_id, span_id)  # the innermost span
    assert lines["inside"]["prompt"] == "[redacted]"  # redaction still applies
    assert "trace_id" not in lines["outside"] and "span_id" not in lines["outside"]


def test_with_tracing_off_no_line_carries_ids() -> None:
    (_, _, valid), lines = _run({})
    assert valid == "False"  # no span is recorded at all
    assert "trace_id" not in lines["inside"] and "trace_id" not in lines["outside"]
