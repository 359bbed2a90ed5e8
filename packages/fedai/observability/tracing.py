"""OpenTelemetry tracing (docs/observability.md): set up from the standard `OTEL_*` variables, and the one place
where a W3C `traceparent` goes into and out of HTTP headers.

Off by default. A service turns it on only when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) or
OTEL_TRACES_EXPORTER names an exporter, and OTEL_SDK_DISABLED is not "true"; otherwise no SDK TracerProvider is
installed, no exporter thread runs, no request middleware is mounted, and `span` is a shared null context (no
trace context is read or forwarded). The light client installs without OpenTelemetry (`fedai[otel]` adds it):
then every helper here does nothing.

The traceparent travels in an HTTP header, never in a signed event, so tracing never changes what is signed.
Span attributes carry identifiers and counts (model, node key, attempt, status, tokens), never prompts, outputs
or secrets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    HAVE_OTEL = True
except ImportError:  # the light client without the otel extra
    HAVE_OTEL = False

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("fedai.tracing")

TRACER_NAME = "fedai"
PROPAGATED = ("traceparent", "tracestate")  # the W3C trace context headers
Kind = Literal["internal", "server", "client"]
AttributeValue = str | int | float | bool


class TracingConfigError(ValueError):
    """An OTEL_* variable names something this build cannot do (the message names the variable)."""


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the `OTEL_*` variables ask for traces: an OTLP endpoint or an exporter is named (and the SDK is
    not disabled, and the exporter is not "none")."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return bool(exporter or endpoint)


def setup_tracing(service_name: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install an SDK TracerProvider exporting as the `OTEL_*` variables say, or nothing when they do not ask for
    traces (returns None). OTEL_SERVICE_NAME overrides `service_name`; the SDK reads the rest itself
    (OTEL_EXPORTER_OTLP_*, OTEL_BSP_*, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES). The caller shuts the
    provider down on exit (it flushes what is batched)."""
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    if not HAVE_OTEL:
        raise TracingConfigError("OTEL_* asks for traces but OpenTelemetry is not installed: pip install 'fedai[otel]'")
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in _exporter_names(env):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    trace.set_tracer_provider(provider)
    log.info("tracing on", extra={"exporters": ",".join(_exporter_names(env))})
    return provider


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    names = [n.strip().lower() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")]
    return [n for n in names if n]


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    """An exporter named by OTEL_TRACES_EXPORTER: OTLP over HTTP/protobuf, or the console (for debugging)."""
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol not in (None, "", "http/protobuf"):
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf is supported")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise TracingConfigError(f"OTEL_TRACES_EXPORTER={name}: supported are otlp, console and none")


_NO_SPAN = nullcontext()  # reusable: what `span` is while no provider is installed
_tracer: Any = None  # fedai's tracer, once a provider is installed (it cannot be uninstalled)


def tracing_active() -> bool:
    """An SDK provider is installed (by `setup_tracing`, or by the application embedding the SDK)."""
    global _tracer
    if _tracer is None and HAVE_OTEL and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _tracer = trace.get_tracer(TRACER_NAME)
    return _tracer is not None


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: Kind = "internal"
) -> AbstractContextManager[Any]:
    """A span around a block, child of the current one. With no provider installed it is a shared null context:
    cheaper than the API's no-op span (measured: docs/performance.md#tracing). Attributes must be identifiers or
    counts, never content."""
    if not tracing_active():
        return _NO_SPAN
    return _tracer.start_as_current_span(name, kind=_KINDS[kind], attributes=attributes)  # type: ignore[no-any-return]


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Set attributes on the current span; nothing when it is not recording."""
    if not tracing_active():
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(attributes)


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id in hex (as trace backends show them), for log lines; None when
    tracing is off or no span is current."""
    if not tracing_active():
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def inject(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` plus the current trace context (`traceparent`), or `headers` itself when there is none (no copy
    made: the common case with tracing off)."""
    if not tracing_active() or not trace.get_current_span().get_span_context().is_valid:
        return headers
    carrier: dict[str, str] = dict(headers)
    propagate.inject(carrier)
    return carrier


@contextmanager
def _server_span(name: str, carrier: Mapping[str, str], attributes: dict[str, AttributeValue]) -> Iterator[Any]:
    parent = propagate.extract(carrier)
    with trace.get_tracer(TRACER_NAME).start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes
    ) as current:
        yield current


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestSpans:
    """ASGI middleware: one SERVER span per HTTP request, child of the caller's `traceparent` if it sent one.
    Added to an app only while tracing is active (`request_spans`), so it costs nothing when off."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key.decode("latin-1") in PROPAGATED
        }
        attributes: dict[str, AttributeValue] = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with _server_span(self.name, carrier, attributes) as current:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, traced_send)


def request_spans(name: str) -> list[Any]:
    """Starlette middleware list: `RequestSpans` named `name` when tracing is active, else nothing."""
    if not tracing_active():
        return []
    from starlette.middleware import Middleware

    return [Middleware(RequestSpans, name=name)]


if HAVE_OTEL:
    _KINDS = {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER, "client": SpanKind.CLIENT}
