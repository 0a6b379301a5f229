"""Keys: the keys file (hashes, roles, quotas), its reload on change and on SIGHUP without a
restart, and the role table."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest

from capmesh.client import sync_channel
from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.auth.keys import Keys, KeysFileError, Quota, Role, parse_keys_file
from capmesh.gateway.server.auth.policy import check_role
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.runtime.errors import Unauthenticated
from tests.security.support import GatewayProcess, sha256, write_keys

DEFAULTS = Quota(requests_per_minute=100)


def test_the_keys_file_holds_hashes_roles_and_quotas():
    text = "\n".join(
        [
            "# comment",
            "",
            f'{{"id": "a", "sha256": "{sha256("ka")}", "role": "admin", "concurrent_calls": 3}}',
            f'{{"sha256": "{sha256("kb").upper()}"}}',
        ]
    )
    keys = parse_keys_file(text, "keys.jsonl", DEFAULTS)
    admin, client = keys[sha256("ka")], keys[sha256("kb")]
    assert (admin.key_id, admin.role, admin.quota) == ("a", Role.ADMIN, Quota(100, 3, 0))
    assert (client.key_id, client.role, client.quota) == (f"key-{sha256('kb')[:8]}", Role.CLIENT, DEFAULTS)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "not a JSON object"),
        ('{"sha256": "abc"}', "64 hex digits"),
        (f'{{"sha256": "{sha256("k")}", "role": "root"}}', "role must be"),
        (f'{{"sha256": "{sha256("k")}", "requests_per_minute": -1}}', "requests_per_minute"),
    ],
)
def test_a_bad_keys_file_names_the_line(line, problem):
    with pytest.raises(KeysFileError, match=rf"keys.jsonl:2: .*{problem}"):
        parse_keys_file("# first\n" + line, "keys.jsonl", DEFAULTS)


def test_who_is_who(tmp_path):
    keys_file = write_keys(tmp_path / "keys.jsonl", [{"id": "b", "role": "backend", "key": "kb"}])
    keys = Keys(GatewaySettings(api_keys=("legacy",), keys_file=str(keys_file), mesh_secret="s"))
    assert keys.authenticate({"authorization": "Bearer legacy"}).role is Role.CLIENT
    assert keys.authenticate({"x-api-key": "kb"}).role is Role.BACKEND
    assert keys.authenticate({"x-capmesh-mesh-secret": "s"}).role is Role.BACKEND
    for headers, reason in [
        ({}, "API_KEY_MISSING"),
        ({"authorization": "Bearer nope"}, "API_KEY_INVALID"),
        ({"authorization": "Basic bGVnYWN5"}, "API_KEY_MISSING"),
        ({"x-capmesh-mesh-secret": "guess"}, "MESH_CREDENTIAL_INVALID"),
    ]:
        refused = keys.authenticate(headers)
        assert isinstance(refused, Unauthenticated) and refused.reason == reason
    # a mesh secret alone: callers without a credential are clients; nothing at all: an open gateway
    assert Keys(GatewaySettings(mesh_secret="s")).authenticate({}).role is Role.CLIENT
    assert Keys(GatewaySettings()).authenticate({}).role is Role.ADMIN


def test_the_role_table():
    from capmesh.gateway.server.auth.keys import Principal

    register = "/capmesh.gateway.v1.RegistryService/Register"
    client, backend, admin = (Principal("x", role) for role in Role)
    assert check_role(client, register).reason == "ROLE_NOT_ALLOWED"
    assert check_role(backend, register) is None and check_role(admin, register) is None
    assert check_role(backend, "/capmesh.admin.v1.AdminService/UnloadModels") is not None
    assert check_role(admin, "/capmesh.admin.v1.AdminService/UnloadModels") is None
    for method in ("/capmesh.tts.v1.TtsService/StreamSynthesize", "/capmesh.gateway.v1.JobService/SubmitJob"):
        assert check_role(client, method) is None


def _accepted(address: str, key: str) -> bool:
    with sync_channel(address, api_key=key) as channel:
        try:
            registry_service_pb2_grpc.RegistryServiceStub(channel).ListCapabilities(
                pb.ListCapabilitiesRequest(), timeout=10
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False
        return True


def _eventually(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the keys were not reloaded"
        time.sleep(0.05)  # polling the gateway until it answers with the new keys


async def test_a_changed_keys_file_is_read_again_without_a_restart(tmp_path):
    keys_file = write_keys(tmp_path / "keys.jsonl", [{"id": "old", "key": "old-key"}])
    settings = GatewaySettings(
        port=0, http_port=0, keys_file=str(keys_file), keys_reload_s=0.05, files_dir=str(tmp_path / "f")
    )
    running = await start_gateway(settings)
    try:
        address = running.grpc_address
        assert await asyncio.to_thread(_accepted, address, "old-key")
        write_keys(keys_file, [{"id": "new", "key": "new-key"}])
        await asyncio.to_thread(_eventually, lambda: _accepted(address, "new-key"))
        assert not await asyncio.to_thread(_accepted, address, "old-key")
        keys_file.write_text("{broken\n")  # kept out: the keys in force stay
        await asyncio.sleep(0.3)  # several reload periods pass
        assert await asyncio.to_thread(_accepted, address, "new-key")
    finally:
        await running.stop(grace_s=0)


@pytest.mark.e2e
def test_sighup_reloads_the_keys_file(tmp_path):
    keys_file = write_keys(tmp_path / "keys.jsonl", [{"id": "old", "key": "old-key"}])
    env = {
        "CAPMESH_GATEWAY_KEYS_FILE": str(keys_file),
        "CAPMESH_GATEWAY_KEYS_RELOAD_S": "3600",  # only the signal can reload it in this test
        "CAPMESH_GATEWAY_FILES_DIR": str(tmp_path / "files"),
    }
    with GatewayProcess(env) as gateway:
        assert _accepted(gateway.address, "old-key")
        write_keys(keys_file, [{"id": "new", "key": "new-key"}])
        gateway.process.send_signal(signal.SIGHUP)
        _eventually(lambda: _accepted(gateway.address, "new-key"))
        assert not _accepted(gateway.address, "old-key")
