"""With a certificate configured, the bridge dials the gateway's gRPC port over TLS, trusting that
certificate and verifying it by the name it carries (the loopback address need not be in it)."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.http.app import build_bridge_app


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=capmesh-gateway", "-addext", "subjectAltName=DNS:capmesh-gateway"],
                   check=True, capture_output=True)
    return cert, key


async def test_readiness_check_goes_over_tls(certificate):
    cert, key = certificate
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    await server.start()
    settings = GatewaySettings(port=0, http_port=0, tls_cert_file=str(cert), tls_key_file=str(key))
    app = build_bridge_app(settings, f"127.0.0.1:{port}", grpc_tls=True)
    plain = build_bridge_app(GatewaySettings(port=0, http_port=0), f"127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=plain), base_url="http://gateway") as http:
            refused = await http.get("/readyz")
        assert refused.status_code == 503  # a plaintext dial to a TLS port does not pass
    finally:
        await app.state.bridge.upstream.close()
        await plain.state.bridge.upstream.close()
        await server.stop(0)
