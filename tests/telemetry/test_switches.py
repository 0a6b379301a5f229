"""What switches tracing and metrics on, and the pieces that carry a trace: no processes here."""

from __future__ import annotations

import pytest

from capmesh.gateway.server.jobs.record import JobRecord
from capmesh.services.runtime import telemetry
from capmesh.services.runtime.settings import ServerSettings, SettingsError

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "tts"}, False),  # a name alone exports nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_standard_variables_switch_tracing(environ, wanted):
    assert telemetry.tracing_wanted(environ) is wanted


def test_without_the_variables_nothing_is_set_up():
    assert telemetry.setup_tracing("tts", environ={}) is False
    assert not telemetry.enabled()
    assert telemetry.current_context() is None
    assert telemetry.mark("job submit", {}) == ""
    with telemetry.span_under(TRACEPARENT, "job attempt", {}):
        assert not telemetry.enabled()


def test_an_outgoing_call_carries_its_own_parent_not_the_callers():
    incoming = (("x-request-id", "r1"), ("traceparent", TRACEPARENT), ("tracestate", "a=b"))
    outgoing = telemetry.trace_metadata(incoming)  # no current span: the caller's headers are dropped
    assert outgoing == (("x-request-id", "r1"),)
    context = telemetry.context_of_metadata(incoming)
    span_context = telemetry.trace.get_current_span(context).get_span_context()
    assert format(span_context.trace_id, "032x") == TRACEPARENT.split("-")[1]


def test_a_jobs_traceparent_survives_the_store():
    record = JobRecord(job_id="j1", capability="tts", method="/m", request=b"", traceparent=TRACEPARENT)
    fields = record.to_fields()
    raw = {key.encode(): (value if isinstance(value, bytes) else str(value).encode()) for key, value in fields.items()}
    assert JobRecord.from_fields("j1", raw, None).traceparent == TRACEPARENT


@pytest.mark.parametrize("port", [-2, 65536])
def test_metrics_port_is_checked(port):
    with pytest.raises(SettingsError, match="metrics_port"):
        ServerSettings(metrics_port=port)
