"""mTLS between the gateway and a backend, with certificates from `capmesh certs init`: the gateway
reaches the backend with its certificate; a client whose certificate another CA signed, or that
has none, is refused in the TLS handshake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from capmesh.llm.v1 import llm_service_pb2 as llm
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.trust import MESH_SERVICE_NAME
from tests.security.support import ROOT, GatewayProcess, RecorderProcess, wait_available

pytestmark = pytest.mark.e2e

REQUEST = llm.ChatRequest(messages=[llm.ChatMessage(content="hi")])


def certs_init(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "capmesh.cli.main", "certs", "init", str(directory)], cwd=ROOT, check=True)
    return directory


def _chat(address: str, ca: Path, cert: Path | None, key: Path | None) -> llm.ChatResponse:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    options = [("grpc.ssl_target_name_override", MESH_SERVICE_NAME)]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        return llm_service_pb2_grpc.LlmServiceStub(channel).Chat(REQUEST, timeout=10)


def test_a_backend_with_mtls_serves_the_gateway_and_refuses_other_certificates(tmp_path):
    mesh, rogue = certs_init(tmp_path / "mesh"), certs_init(tmp_path / "rogue")
    assert (mesh / "ca-key.pem").stat().st_mode & 0o077 == 0  # private keys: owner only
    gateway_env = {
        "CAPMESH_GATEWAY_BACKEND_TLS_CA_FILE": str(mesh / "ca.pem"),
        "CAPMESH_GATEWAY_BACKEND_TLS_CERT_FILE": str(mesh / "gateway.pem"),
        "CAPMESH_GATEWAY_BACKEND_TLS_KEY_FILE": str(mesh / "gateway-key.pem"),
        "CAPMESH_GATEWAY_FILES_DIR": str(tmp_path / "files"),
    }
    with GatewayProcess(gateway_env) as gateway:
        backend_env = {
            "CAPMESH_RECORDER_GATEWAY": gateway.address,
            "CAPMESH_RECORDER_TLS_CERT_FILE": str(mesh / "service.pem"),
            "CAPMESH_RECORDER_TLS_KEY_FILE": str(mesh / "service-key.pem"),
            "CAPMESH_RECORDER_TLS_CLIENT_CA_FILE": str(mesh / "ca.pem"),
        }
        with RecorderProcess(backend_env) as backend:
            wait_available(gateway.address, "llm")  # the gateway's health probe got through mTLS
            with grpc.insecure_channel(gateway.address) as channel:
                assert llm_service_pb2_grpc.LlmServiceStub(channel).Chat(REQUEST, timeout=30).message.content
            # the gateway's own certificate works directly too: the refusals below are about the certificate
            assert _chat(backend.address, mesh / "ca.pem", mesh / "gateway.pem", mesh / "gateway-key.pem")
            for cert, key in [(rogue / "gateway.pem", rogue / "gateway-key.pem"), (None, None)]:
                with pytest.raises(grpc.RpcError) as refused:
                    _chat(backend.address, mesh / "ca.pem", cert, key)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            with grpc.insecure_channel(backend.address) as plain, pytest.raises(grpc.RpcError):
                llm_service_pb2_grpc.LlmServiceStub(plain).Chat(REQUEST, timeout=10)
