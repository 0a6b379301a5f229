"""`capmesh deploy kubernetes`: every manifest of every shipped profile validates strictly against
the Kubernetes 1.31 schemas (offline: kubernetes-validate ships them), and carries the wiring the
mesh needs (probes on the service's health name, drain-long grace, GPUs, pod-IP advertising)."""

from __future__ import annotations

import math
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.mesh.kubernetes import GRPC_PORT, KUBERNETES_VERSION, manifests
from capmesh.mesh.spec import load_mesh
from capmesh.services.catalog import capability

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "deploy").glob("*.yaml"))


def _deploy(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["deploy", "kubernetes", *args])
    assert result.exit_code == 0, result.output
    return [item for item in yaml.safe_load_all(result.stdout) if item]


def _by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_manifest_of_every_profile_validates_strictly(profile):
    objects = _deploy("-f", str(profile))
    assert objects
    for item in objects:
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_each_capability_is_a_probed_drained_deployment_with_a_budget(profile):
    spec = load_mesh(profile)
    objects = manifests(spec)
    deployments = _by_kind(objects, "Deployment")
    budgets = _by_kind(objects, "PodDisruptionBudget")
    config = _by_kind(objects, "ConfigMap")
    for component in spec.capabilities:
        name = f"{spec.name}-{component.name}"
        deployment = deployments[name]
        assert deployment["spec"]["replicas"] == component.replicas
        assert budgets[name]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        assert container["command"] == ["capmesh"]
        assert container["args"][:2] == ["serve", component.name]
        assert container["args"][container["args"].index("--gateway") + 1] == f"{spec.name}-gateway:50051"
        service = capability(component.name).services()[0].full_name
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"] == {"port": GRPC_PORT, "service": service}
        grace = component.settings.grace_period_s
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > math.ceil(grace) + pre_stop
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env[f"CAPMESH_{component.env_prefix}_ADVERTISE_ADDRESS"]["value"] == "$(POD_IP):50051"
        assert container["envFrom"] == [{"configMapRef": {"name": name}}]
        assert config[name]["data"] == {**config[name]["data"], **component.env()}
        for variable, ref in component.secret_env().items():
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": spec.secret_name, "key": ref.env}
            assert variable not in config[name]["data"]
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_gpu_profile_asks_for_gpus_and_the_offline_profile_does_not():
    gpu = _by_kind(manifests(load_mesh(ROOT / "deploy" / "gpu.yaml")), "Deployment")
    for name in ("capmesh-llm", "capmesh-videogen", "capmesh-imagegen"):
        assert _container(gpu[name])["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert "limits" not in _container(gpu["capmesh-tts"])["resources"]
    offline = manifests(load_mesh(ROOT / "deploy" / "offline.yaml"))
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(offline)


def test_the_gateway_is_a_deployment_and_a_service_scraped_by_prometheus():
    spec = load_mesh(ROOT / "deploy" / "offline.yaml")
    objects = manifests(spec)
    gateway = _by_kind(objects, "Deployment")["capmesh-gateway"]
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    container = _container(gateway)
    assert container["args"][0] == "gateway"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = _by_kind(objects, "Service")["capmesh-gateway"]
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("grpc", 50051), ("http", 8080)}
    assert _by_kind(objects, "ConfigMap")["capmesh-gateway"]["data"]["HF_HUB_OFFLINE"] == "1"


def test_redis_is_a_url_or_a_small_statefulset(tmp_path):
    remote = manifests(load_mesh(ROOT / "deploy" / "remote.yaml"))
    assert not _by_kind(remote, "StatefulSet")
    gateway_config = _by_kind(remote, "ConfigMap")["capmesh-gateway"]["data"]
    assert gateway_config["CAPMESH_GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
    path = tmp_path / "mesh.yaml"
    path.write_text("name: demo\nkubernetes: {redis: statefulset}\ngateway: {replicas: 2}\ncapabilities: {tts: {}}\n")
    objects = manifests(load_mesh(path))
    assert "demo-redis" in _by_kind(objects, "StatefulSet")
    assert _by_kind(objects, "ConfigMap")["demo-gateway"]["data"]["CAPMESH_GATEWAY_REDIS_URL"] == (
        "redis://demo-redis:6379/0"
    )
    for item in objects:
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


def test_manifests_are_written_one_file_per_object(tmp_path):
    result = CliRunner().invoke(
        app, ["deploy", "kubernetes", "-f", str(ROOT / "deploy" / "gpu.yaml"), "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) == len(manifests(load_mesh(ROOT / "deploy" / "gpu.yaml")))
    for path in files:
        kubernetes_validate.validate(yaml.safe_load(path.read_text()), KUBERNETES_VERSION, strict=True)


def test_a_bad_mesh_file_stops_the_command_with_its_line(tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text("capmesh: 1\ncapabilities:\n  tts: {replicas: 0}\n")
    result = CliRunner().invoke(app, ["deploy", "kubernetes", "-f", str(path)])
    assert result.exit_code == 2
    assert f"{path}:1: capmesh: unknown key" in result.output
    assert f"{path}:3: capabilities.tts.replicas:" in result.output
