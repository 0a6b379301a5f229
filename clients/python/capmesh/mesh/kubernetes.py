"""Kubernetes manifests for a checked mesh file: `capmesh deploy kubernetes -f FILE`.

Kubernetes already schedules, restarts and scales processes, so capmesh does not: each component
becomes the objects a platform team expects, and the capmesh-specific parts are only wiring.
- A capability is a Deployment of `capmesh serve <name>` pods. Each pod registers with the
  gateway Service and advertises its own pod IP (the downward API), so the gateway dials pods
  directly and balances and fails over between them itself. Native gRPC probes ask
  grpc.health.v1 for the capability's service name: the server answers NOT_SERVING the moment it
  starts draining, and a startup probe gives an eager model load its time before liveness counts.
- Shutdown: SIGTERM makes the server deregister, go NOT_SERVING and wait up to `grace_period_s`
  for in-flight calls before it unloads the models, so `terminationGracePeriodSeconds` covers the
  preStop pause, that drain and the unload.
- Settings travel as `CAPMESH_<PREFIX>_<FIELD>` variables from a ConfigMap per component; every
  `{env: NAME}` secret reference reads key NAME of a Secret the operator creates.
- The gateway is a Deployment behind a Service (gRPC and HTTP), ready on /readyz, with the
  Prometheus scrape annotations on its pods; Redis is either the URL the file gives or a small
  StatefulSet.
- Every capability pod serves its Prometheus metrics on `metrics_port` (METRICS_PORT unless the
  mesh file names a port) and carries the same scrape annotations (deploy/prometheus.yml).
"""

from __future__ import annotations

import math
from typing import Any

from capmesh.mesh.spec import GATEWAY, OFFLINE_ENV, Component, MeshSpec, SecretRef
from capmesh.services.catalog import capability

GRPC_PORT = 50051
REDIS_PORT = 6379
METRICS_PORT = 9464  # a capability pod's /metrics (the port OpenTelemetry's Prometheus exporters use)
RUN_AS_USER = 10001  # the image's non-root user (Dockerfile)
PRESTOP_S = 5  # Service endpoints and kube-proxy forget a terminating pod only after SIGTERM is sent
UNLOAD_MARGIN_S = 15  # after the drain: unloading models and releasing GPU memory
CACHE_DIR = "/var/cache/capmesh"  # tiny checkpoints, the files store, hub downloads (an emptyDir)
KUBERNETES_VERSION = "1.31.0"  # the schemas the tests validate against

Manifest = dict[str, Any]


def manifests(spec: MeshSpec) -> list[Manifest]:
    """Every object of the mesh, in the order `kubectl apply` should meet them."""
    objects: list[Manifest] = []
    if spec.redis == "statefulset":
        objects += redis_objects(spec)
    objects += gateway_objects(spec)
    for component in spec.capabilities:
        objects += capability_objects(spec, component)
    return objects


def labels(spec: MeshSpec, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "capmesh",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": component,
    }


def object_name(spec: MeshSpec, component: str) -> str:
    return f"{spec.name}-{component}"


def gateway_address(spec: MeshSpec) -> str:
    return f"{object_name(spec, GATEWAY)}:{spec.gateway.settings.port}"


def config_map(spec: MeshSpec, component: Component, extra: dict[str, str]) -> Manifest:
    data = {**(OFFLINE_ENV if spec.offline else {}), **extra, **component.env()}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": object_name(spec, component.name), "labels": labels(spec, component.name)},
        "data": dict(sorted(data.items())),
    }


def secret_env(spec: MeshSpec, refs: dict[str, SecretRef]) -> list[dict[str, Any]]:
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.secret or spec.secret_name, "key": ref.env}}}
        for name, ref in sorted(refs.items())
    ]


def resources(component: Component) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", component.cpu), ("memory", component.memory)) if v}
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if component.gpus:
        # Extended resources are asked for in limits (requests default to the same).
        out["limits"] = {"nvidia.com/gpu": component.gpus}
    return out


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_spec(spec: MeshSpec, component: Component, container: dict[str, Any]) -> dict[str, Any]:
    grace = math.ceil(component.settings.grace_period_s) + PRESTOP_S + UNLOAD_MARGIN_S
    container = {
        **container,
        "image": spec.image,
        "envFrom": [{"configMapRef": {"name": object_name(spec, component.name)}}],
        "resources": resources(component),
        "securityContext": container_security(),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_S}}},
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_DIR}],
    }
    return {
        "terminationGracePeriodSeconds": grace,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "fsGroup": RUN_AS_USER},
        "containers": [container],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    }


def deployment(spec: MeshSpec, component: Component, pod: dict[str, Any], annotations: dict[str, str]) -> Manifest:
    meta: dict[str, Any] = {"labels": labels(spec, component.name)}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": object_name(spec, component.name), "labels": labels(spec, component.name)},
        "spec": {
            "replicas": component.replicas,
            "selector": {"matchLabels": labels(spec, component.name)},
            "template": {"metadata": meta, "spec": pod},
        },
    }


def disruption_budget(spec: MeshSpec, component: Component) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": object_name(spec, component.name), "labels": labels(spec, component.name)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(spec, component.name)}},
    }


def capability_objects(spec: MeshSpec, component: Component) -> list[Manifest]:
    row = capability(component.name)
    service_name = row.services()[0].full_name
    prefix = component.env_prefix
    metrics_port = max(getattr(component.settings, "metrics_port", 0), 0) or METRICS_PORT
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        # The gateway dials this address: the pod's own IP, not a Service that would hide replicas.
        {"name": f"CAPMESH_{prefix}_ADVERTISE_ADDRESS", "value": f"$(POD_IP):{GRPC_PORT}"},
        # A fixed port to annotate for scraping (the file's own, or METRICS_PORT; never off or ephemeral).
        {"name": f"CAPMESH_{prefix}_METRICS_PORT", "value": str(metrics_port)},
        *secret_env(spec, dict(component.secret_env())),
    ]

    def probe(**timing: int) -> dict[str, Any]:  # a fresh dict each: YAML would print shared ones as anchors
        return {"grpc": {"port": GRPC_PORT, "service": service_name}, **timing}

    container = {
        "name": component.name,
        "command": ["capmesh"],
        "args": [
            "serve",
            component.name,
            "--host",
            "0.0.0.0",
            "--port",
            str(GRPC_PORT),
            "--gateway",
            gateway_address(spec),
        ],
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "metrics", "containerPort": metrics_port}],
        "env": env,
        "startupProbe": probe(periodSeconds=5, failureThreshold=360),  # up to 30 min for an eager load
        "readinessProbe": probe(periodSeconds=5),
        "livenessProbe": probe(periodSeconds=10, failureThreshold=6),
    }
    extra = {"CAPMESH_HOME": CACHE_DIR, "HF_HOME": f"{CACHE_DIR}/huggingface"}
    return [
        config_map(spec, component, extra),
        deployment(spec, component, pod_spec(spec, component, container), scrape_annotations(metrics_port)),
        disruption_budget(spec, component),
    ]


def scrape_annotations(port: int) -> dict[str, str]:
    """What Prometheus' Kubernetes pod discovery reads (deploy/prometheus.yml keeps annotated pods)."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def gateway_objects(spec: MeshSpec) -> list[Manifest]:
    component = spec.gateway
    settings = component.settings
    grpc_port = settings.port
    http_port = getattr(settings, "http_port", 8080)
    extra = {"CAPMESH_HOME": CACHE_DIR}
    if spec.redis == "statefulset" and not getattr(settings, "redis_url", ""):
        extra["CAPMESH_GATEWAY_REDIS_URL"] = f"redis://{object_name(spec, 'redis')}:{REDIS_PORT}/0"
    container = {
        "name": GATEWAY,
        "command": ["capmesh"],
        "args": ["gateway", "--host", "0.0.0.0"],
        "ports": [
            {"name": "grpc", "containerPort": grpc_port},
            {"name": "http", "containerPort": http_port},
        ],
        "env": secret_env(spec, dict(component.secret_env())),
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
    }
    scrape = scrape_annotations(http_port)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": object_name(spec, GATEWAY), "labels": labels(spec, GATEWAY)},
        "spec": {
            "selector": labels(spec, GATEWAY),
            "ports": [
                {"name": "grpc", "port": grpc_port, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
                {"name": "http", "port": http_port, "targetPort": "http"},
            ],
        },
    }
    return [
        config_map(spec, component, extra),
        deployment(spec, component, pod_spec(spec, component, container), scrape),
        service,
        disruption_budget(spec, component),
    ]


def redis_objects(spec: MeshSpec) -> list[Manifest]:
    name = object_name(spec, "redis")
    selector = labels(spec, "redis")
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": selector},
            "spec": {"selector": selector, "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "labels": selector},
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": selector},
                    "spec": {
                        "containers": [
                            {
                                "name": "redis",
                                "image": "redis:7.4-alpine",
                                "args": ["--appendonly", "yes"],
                                "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                                "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                    }
                ],
            },
        },
    ]
