"""Per-service Prometheus metrics and the Grafana dashboard that reads them.

A TTS server with `metrics_port=0` serves /metrics on a port of its own with latency by method and
code, time to first message, queue wait, real-time factor, model load time, admission gauges,
resident models and device memory; what the other capabilities report (tokens, steps) is read
from their messages the same way; every capability's server declares the same series on its
`metrics_port`. The dashboard's PromQL names only series that a running service or gateway declares,
groups and selects only by their labels, and the Kubernetes manifests open and annotate every
capability pod's port.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from capmesh.common.v1 import progress_pb2
from capmesh.gateway.server import metrics as gateway_metrics
from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.config import GatewaySettings
from capmesh.llm.v1 import llm_service_pb2
from capmesh.mesh.kubernetes import METRICS_PORT, manifests, scrape_annotations
from capmesh.mesh.spec import load_mesh
from capmesh.services import catalog
from capmesh.services.runtime import metrics
from capmesh.services.runtime.server import RunningServer, create_server
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.main import build_service
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "capmesh.json"
SYNTHESIZE = "/capmesh.tts.v1.TtsService/StreamSynthesize"
# What a histogram, a counter and a gauge family `name` exposes as series.
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def declared_series(text: str) -> set[str]:
    """Every series name the exposition declares (`# TYPE` lines), observed yet or not."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def family_of(series: str) -> str:
    """The metric family a series name belongs to (`x_bucket`, `x_count`, `x_sum`, `x_total` -> `x`)."""
    return re.sub(r"_(bucket|count|sum|total)$", "", series)


def family_labels(*expositions: str) -> dict[str, set[str]]:
    """The label names of every family: those the metrics of both modules are declared with (a
    labelled metric has no series until observed) and those of the samples exposed."""
    labels: dict[str, set[str]] = {}
    for module in (metrics, gateway_metrics):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                labels.setdefault(metric._name, set()).update(metric._labelnames)
    states = gateway_metrics.backend_states  # read when scraped, from the registry: declared here
    labels.setdefault(states.name, set()).update(states.labelnames)
    for text in expositions:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels.setdefault(family_of(family.name), set()).update(sample.labels)
    return labels


def dashboard_panels(panels: list[dict]) -> list[dict]:
    """Every panel, those inside a (collapsed) row included."""
    return [p for panel in panels for p in (panel, *dashboard_panels(panel.get("panels", [])))]


def endpoint_port(running: RunningServer) -> int:
    return next(hook.port for hook in running.extra if isinstance(hook, metrics.MetricsEndpoint))


@pytest.fixture
async def tts_with_metrics():
    # Loaded at start: the per-model series (model memory) then exist before the first call.
    running = await create_server(build_service(TtsSettings(metrics_port=0, eager_load=True)))
    yield running
    await running.shutdown(grace_s=0)


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


async def test_a_service_serves_its_own_metrics(tts_with_metrics):
    running = tts_with_metrics
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = tts_service_pb2_grpc.TtsServiceStub(channel)
        messages = [m async for m in stub.StreamSynthesize(tts_service_pb2.StreamSynthesizeRequest(text="Counted."))]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.StreamSynthesize(tts_service_pb2.StreamSynthesizeRequest(text="")).read()
    assert messages[-1].HasField("result")
    code = refused.value.code().name
    values = samples(await scrape(endpoint_port(running)))

    def value(name: str, **labels: str) -> float:
        return values.get((name, frozenset(labels.items())), 0.0)

    tts = {"capability": "tts"}
    assert value("capmesh_service_request_seconds_count", **tts, method=SYNTHESIZE, code="OK") >= 1
    assert value("capmesh_service_request_seconds_count", **tts, method=SYNTHESIZE, code=code) >= 1
    assert value("capmesh_service_first_message_seconds_count", **tts, method=SYNTHESIZE) >= 1
    assert value("capmesh_service_queue_wait_seconds_count", **tts) >= 1
    assert value("capmesh_service_real_time_factor_count", **tts) >= 1
    assert value("capmesh_service_resident_models", **tts) >= 1
    assert value("capmesh_service_max_concurrency", **tts) == running.service.settings.max_concurrency
    assert value("capmesh_service_in_flight", **tts) == 0
    assert value("capmesh_service_queue_depth", **tts) == 0
    assert value("capmesh_device_memory_bytes", **tts, device="cpu", kind="resident") > 0
    assert any(name == "capmesh_model_load_seconds_count" and v >= 1 for (name, _), v in values.items())
    # Health, reflection and admin calls are not the capability's: no series of theirs.
    assert not any("grpc.health" in dict(labels).get("method", "") for _, labels in values)


# What every capability's endpoint declares, whatever it serves (the gauges with its own label).
EVERY_SERVICE = {
    "capmesh_service_request_seconds_bucket",
    "capmesh_service_first_message_seconds_bucket",
    "capmesh_service_queue_wait_seconds_bucket",
    "capmesh_service_steps_total",
    "capmesh_service_generated_tokens_total",
    "capmesh_service_tokens_per_second_bucket",
    "capmesh_service_real_time_factor_bucket",
    "capmesh_model_load_seconds_bucket",
}
CAPABILITY_GAUGES = (
    "capmesh_service_in_flight",
    "capmesh_service_queue_depth",
    "capmesh_service_max_concurrency",
    "capmesh_service_resident_models",
)


@pytest.mark.parametrize("name", catalog.NAMES)
async def test_every_capability_serves_the_series_on_its_metrics_port(name):
    """Every service runs the one bootstrap: `metrics_port` gives each the same endpoint. No model
    is loaded (they load on first use), so this costs a server start per capability."""
    capability = catalog.capability(name)
    running = await create_server(capability.build_service(capability.settings_class(metrics_port=0)))
    try:
        text = await scrape(endpoint_port(running))
    finally:
        await running.shutdown(grace_s=0)
    missing = EVERY_SERVICE - declared_series(text)
    assert not missing, sorted(missing)
    values = samples(text)
    for gauge in CAPABILITY_GAUGES:
        assert (gauge, frozenset({("capability", name)})) in values, gauge
    resident = frozenset({"capability": name, "device": "cpu", "kind": "resident"}.items())
    assert values[("capmesh_device_memory_bytes", resident)] > 0


def test_the_work_in_the_messages_becomes_tokens_steps_and_real_time_factor():
    measure = metrics._CallMeasure("testcap", "/x.v1.X/Stream")
    measure.message(llm_service_pb2.StreamChatResponse(), streaming=True)  # neither progress nor result
    for step in (1, 2, 2, 5):  # a repeated step is not counted twice
        progress = progress_pb2.Progress(stage="denoising", step=step, total_steps=5)
        measure.message(tts_service_pb2.StreamSynthesizeResponse(progress=progress), streaming=True)
    result = llm_service_pb2.ChatResult(usage=llm_service_pb2.Usage(completion_tokens=12))
    measure.message(llm_service_pb2.StreamChatResponse(result=result), streaming=True)
    audio = tts_service_pb2.SynthesisResult(duration_seconds=2.0)
    measure.message(tts_service_pb2.StreamSynthesizeResponse(result=audio), streaming=True)
    measure.done(grpc.StatusCode.OK)
    registry = metrics.REGISTRY
    assert (
        registry.get_sample_value("capmesh_service_steps_total", {"capability": "testcap", "stage": "denoising"}) == 5
    )
    assert registry.get_sample_value("capmesh_service_generated_tokens_total", {"capability": "testcap"}) == 12
    assert registry.get_sample_value("capmesh_service_tokens_per_second_count", {"capability": "testcap"}) == 1
    assert registry.get_sample_value("capmesh_service_real_time_factor_count", {"capability": "testcap"}) == 1
    labels = {"capability": "testcap", "method": "/x.v1.X/Stream"}
    assert registry.get_sample_value("capmesh_service_first_message_seconds_count", labels) == 1


async def test_the_dashboard_reads_only_series_a_service_or_the_gateway_declares(tts_with_metrics, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels(dashboard["panels"])
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", ()) if target.get("expr")]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    assert len(expressions) >= 15
    gateway = await start_gateway(GatewaySettings(port=0, http_port=0, files_dir=str(tmp_path / "files")))
    try:
        async with httpx.AsyncClient() as client:
            exposed = (await client.get(f"{gateway.http_url}/metrics", timeout=10)).text
    finally:
        await gateway.stop(grace_s=0)
    service_exposed = await scrape(endpoint_port(tts_with_metrics))
    declared = declared_series(exposed) | declared_series(service_exposed)
    referenced = {name for text in expressions + variables for name in re.findall(r"\bcapmesh_[a-z0-9_]+", text)}
    assert referenced, "the dashboard reads no capmesh series"
    assert referenced <= declared, sorted(referenced - declared)
    # The labels it groups by (`by (...)`) and selects on (`{...}`) are labels of the series it
    # reads (and `le` of a histogram's buckets): a wrong one draws an empty or a flat panel.
    labels = family_labels(exposed, service_exposed)
    for text in expressions + variables:
        series = re.findall(r"\bcapmesh_[a-z0-9_]+", text)
        known = set().union(*(labels.get(family_of(name), set()) for name in series))
        known |= {"le"} if any(name.endswith("_bucket") for name in series) else set()
        used = {name.strip() for group in re.findall(r"\bby \(([^)]*)\)", text) for name in group.split(",")}
        used |= {
            m for selector in re.findall(r"\{([^}]*)\}", text) for m in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector)
        }
        used |= set(re.findall(r"label_values\([^,]+,\s*(\w+)\)", text))
        assert used <= known, (text, sorted(used - known))
    # Every panel reads something: no empty or placeholder panels.
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_capability_pod_serves_metrics_and_is_annotated_for_scraping():
    objects = manifests(load_mesh(ROOT / "deploy" / "offline.yaml"))
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    capabilities = [d for name, d in deployments.items() if name != "capmesh-gateway"]
    assert capabilities
    for deployment in capabilities:
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        assert template["metadata"]["annotations"] == scrape_annotations(METRICS_PORT), deployment["metadata"]["name"]
        assert {"name": "metrics", "containerPort": METRICS_PORT} in container["ports"]
        port = [e["value"] for e in container["env"] if e["name"].endswith("_METRICS_PORT")]
        assert port == [str(METRICS_PORT)]
