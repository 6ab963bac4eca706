"""OpenTelemetry: a span per enqueue and per attempt, the attempt's parent the enqueue's (the
trace context travels in the job's meta), retries in the same trace, failures recorded."""

from __future__ import annotations

import pytest

from engine import Backoff, Engine, JobContext, JobFailed
from engine.testing import worker_running

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from engine.otel import instrument  # noqa: E402


async def test_attempts_are_traced_under_the_span_that_enqueued_them(app: Engine) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(app, tracer_provider=provider)
    app.default_backoff = Backoff(initial=0.01, factor=1.0, max=0.01, jitter=0.0)
    tracer = provider.get_tracer("the web app")

    @app.task
    async def ok(ctx: JobContext, n: int) -> int:
        return n

    @app.task(max_attempts=2)
    async def broken(ctx: JobContext) -> None:
        raise ValueError("no luck")

    async with worker_running(app):
        with tracer.start_as_current_span("POST /orders") as request:
            job = await ok.enqueue(1)
            failing = await broken.enqueue()
        assert await job.result(timeout=10) == 1
        with pytest.raises(JobFailed):
            await failing.result(timeout=10)
    info = await job.info()
    assert info is not None and "traceparent" in info.meta["otel"]

    spans = exporter.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    trace_id = request.get_span_context().trace_id
    (enqueue_ok,) = by_name["enqueue ok"]
    (run_ok,) = by_name["run ok"]
    assert (
        enqueue_ok.kind is SpanKind.PRODUCER
        and enqueue_ok.parent.span_id == request.get_span_context().span_id
    )
    assert run_ok.kind is SpanKind.CONSUMER and run_ok.parent.span_id == enqueue_ok.context.span_id
    assert run_ok.context.trace_id == trace_id and run_ok.attributes["messaging.message.id"] == job.id
    runs = sorted(by_name["run broken"], key=lambda s: s.attributes["engine.attempt"])
    assert [s.attributes["engine.attempt"] for s in runs] == [1, 2]
    assert all(s.context.trace_id == trace_id and s.status.status_code is StatusCode.ERROR for s in runs)
    assert runs[0].events[0].name == "exception"
    assert run_ok.status.status_code is StatusCode.UNSET
