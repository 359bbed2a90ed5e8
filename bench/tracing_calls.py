"""What the tracing calls in the request path cost, per call: with no provider installed (tracing off: a shared
null context), the OpenTelemetry API's own no-op span for comparison, and with the SDK installed (tracing on,
spans batched to an exporter that drops them). A router request makes five spans, three `annotate` and one
`inject`. Prints one JSON document (docs/performance.md#tracing)."""

from __future__ import annotations

import json
import platform
import statistics
import timeit
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from fedai.observability import tracing

CALLS = 50_000
REPEATS = 5
HEADERS = {"Content-Type": "application/json"}


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_call_us(fn: Callable[[], object]) -> float:
    return round(statistics.median(timeit.repeat(fn, number=CALLS, repeat=REPEATS)) / CALLS * 1e6, 3)


def request_calls() -> None:
    """The tracing calls of one routed request: five spans, three annotations, one inject."""
    with tracing.span("router.schedule", {"fedai.model": "m"}):
        tracing.annotate({"fedai.candidates": 3})
    with tracing.span("router.dispatch_attempt", {"fedai.attempt": 1, "fedai.node": "n"}):
        with tracing.span("router.node_call", kind="client"):
            tracing.inject(HEADERS)
            tracing.annotate({"http.response.status_code": 200})
        with tracing.span("router.verify"):
            tracing.annotate({"fedai.tokens.input": 1, "fedai.tokens.output": 2})
    with tracing.span("router.store"):
        pass


def api_noop_span() -> None:
    with trace.get_tracer("fedai").start_as_current_span("router.verify"):
        pass


def main() -> None:
    assert not tracing.tracing_active()
    off = {"request_us": per_call_us(request_calls), "api_noop_span_us": per_call_us(api_noop_span)}
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=100_000))
    trace.set_tracer_provider(provider)
    on = {"request_us": per_call_us(request_calls)}
    provider.shutdown()
    print(
        json.dumps(
            {
                "benchmark": "tracing_calls",
                "machine": {"python": platform.python_version(), "arch": platform.machine()},
                "calls": CALLS,
                "off": off,
                "on": on,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
