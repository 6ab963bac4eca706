"""OpenTelemetry tracing (``pip install 'engine[otel]'``): a span for each enqueue and each
attempt, the trace context carried from producer to worker in the job's ``meta``.

    from engine.otel import instrument
    instrument(app)            # in the producer and in the worker (the same app module)

The enqueue span (kind PRODUCER) is a child of whatever span is current where the job is
enqueued (a web request's); its context goes into ``meta["otel"]`` (W3C ``traceparent``,
through the configured propagator). Each attempt runs in a span (kind CONSUMER) whose parent
is that context, so a job's attempts appear under the request that enqueued it, retries
included; a failed attempt records its exception and sets the span's status to ERROR. Only
``opentelemetry-api`` is needed: spans go wherever the application's SDK sends them (and
nowhere, at no cost, when it configures none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "engine.otel needs the OpenTelemetry API: pip install 'engine[otel]' (opentelemetry-api)"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine.client.app import Engine
    from engine.context import JobContext

META_KEY = "otel"
"""Where in a job's meta the trace context travels."""


def instrument(app: Engine, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace ``app``'s enqueues and attempts (call it once per app, where the app is made)."""
    from engine import __version__

    tracer = trace.get_tracer("engine", __version__, tracer_provider)

    @app.on_enqueue
    def inject(task: str, meta: dict[str, Any]) -> None:
        with tracer.start_as_current_span(
            f"enqueue {task}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "engine",
                "messaging.operation.type": "send",
                "engine.task": task,
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            if carrier:
                meta[META_KEY] = carrier

    async def attempt(ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        carrier = ctx.meta.get(META_KEY)
        parent = propagate.extract(carrier) if isinstance(carrier, dict) else None
        with tracer.start_as_current_span(
            f"run {ctx.task}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "engine",
                "messaging.operation.type": "process",
                "messaging.destination.name": ctx.queue,
                "messaging.message.id": ctx.job_id,
                "engine.task": ctx.task,
                "engine.attempt": ctx.attempt,
                "engine.max_attempts": ctx.max_attempts,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await call_next()
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise

    app.add_middleware(attempt)
