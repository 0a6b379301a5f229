"""`capmesh xds-bootstrap` (gRPC's and Envoy's) and the typed client's `xds:` channels, without a mesh."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - a typed config ParseDict must know
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 - as router_pb2
from google.protobuf import json_format
from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.client.xds import (
    BOOTSTRAP_CONFIG_ENV,
    BOOTSTRAP_FILE_ENV,
    ENVOY_ROUTE,
    use_gateway_xds,
    xds_metadata,
)
from capmesh.gateway.server.xds.resources import ROUTER_FILTER
from capmesh.services.runtime.settings import MESH_SECRET_ENV
from capmesh.services.runtime.trust import MESH_SECRET_HEADER


def test_the_bootstrap_names_every_gateway_as_an_xds_v3_server(tmp_path: Path) -> None:
    path = tmp_path / "xds.json"
    result = CliRunner().invoke(
        app, ["xds-bootstrap", "--gateway", "10.0.0.1:50051,10.0.0.2:50051", "-o", str(path), "--node-id", "n1"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads(path.read_text())
    assert [s["server_uri"] for s in written["xds_servers"]] == ["10.0.0.1:50051", "10.0.0.2:50051"]
    for server in written["xds_servers"]:
        assert server["channel_creds"] == [{"type": "insecure"}] and server["server_features"] == ["xds_v3"]
    assert written["node"]["id"] == "n1"


def test_the_bootstrap_goes_to_stdout_by_default() -> None:
    result = CliRunner().invoke(app, ["xds-bootstrap", "--gateway", "127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["xds_servers"][0]["server_uri"] == "127.0.0.1:1"


def test_xds_channels_need_a_bootstrap_and_send_the_mesh_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # Empty counts as unset; setenv (unlike delenv of an absent variable) restores the variables after the test.
    monkeypatch.setenv(BOOTSTRAP_FILE_ENV, "")
    monkeypatch.setenv(BOOTSTRAP_CONFIG_ENV, "")
    with pytest.raises(ValueError, match="xDS bootstrap"):
        xds_metadata()
    use_gateway_xds("127.0.0.1:50051")
    assert json.loads(os.environ[BOOTSTRAP_CONFIG_ENV])["xds_servers"][0]["server_uri"] == "127.0.0.1:50051"
    monkeypatch.setenv(MESH_SECRET_ENV, "s3cret")
    assert xds_metadata() == ((MESH_SECRET_HEADER, "s3cret"),)
    assert xds_metadata(mesh_secret="") == ()


def _envoy_bootstrap(*args: str) -> bootstrap_pb2.Bootstrap:
    """`capmesh xds-bootstrap --envoy ARGS` read as Envoy reads it: every field and every typed
    config must exist in the envoy v3 API, or parsing fails."""
    result = CliRunner().invoke(app, ["xds-bootstrap", "--envoy", *args])
    assert result.exit_code == 0, result.output
    return json_format.ParseDict(json.loads(result.stdout), bootstrap_pb2.Bootstrap())


def _filters(parsed: bootstrap_pb2.Bootstrap) -> tuple[hcm_pb2.HttpConnectionManager, list[str]]:
    [listener] = parsed.static_resources.listeners
    [chain] = listener.filter_chains
    [network_filter] = chain.filters
    manager = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(manager)
    return manager, [f.name for f in manager.http_filters]


def test_the_envoy_bootstrap_is_an_envoy_v3_bootstrap_on_the_gateways_mesh_route(monkeypatch) -> None:
    monkeypatch.setenv(MESH_SECRET_ENV, "s3cret")
    parsed = _envoy_bootstrap("--gateway", "10.0.0.1:50051,gw-2:50052", "--listen", "0.0.0.0:10001")
    assert parsed.dynamic_resources.ads_config.api_type == config_source_pb2.ApiConfigSource.GRPC
    assert parsed.dynamic_resources.cds_config.HasField("ads")
    [ads_cluster] = parsed.static_resources.clusters
    addresses = [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in ads_cluster.load_assignment.endpoints[0].lb_endpoints
    ]
    assert addresses == [("10.0.0.1", 50051), ("gw-2", 50052)]
    [ads_service] = parsed.dynamic_resources.ads_config.grpc_services
    assert ads_service.envoy_grpc.cluster_name == ads_cluster.name
    # The mesh secret opens the gateway's ADS (backend role) even where it requires API keys.
    assert [(h.key, h.value) for h in ads_service.initial_metadata] == [(MESH_SECRET_HEADER, "s3cret")]

    manager, filters = _filters(parsed)
    assert parsed.static_resources.listeners[0].address.socket_address.port_value == 10001
    assert manager.rds.route_config_name == ENVOY_ROUTE and manager.rds.config_source.HasField("ads")
    assert filters == ["envoy.filters.http.header_mutation", ROUTER_FILTER]
    mutation = header_mutation_pb2.HeaderMutation()
    assert manager.http_filters[0].typed_config.Unpack(mutation)
    [rule] = mutation.mutations.request_mutations
    assert (rule.append.header.key, rule.append.header.value) == (MESH_SECRET_HEADER, "s3cret")
    assert rule.append.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_the_envoy_bootstrap_without_a_mesh_secret_adds_no_header(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MESH_SECRET_ENV, "")
    parsed = _envoy_bootstrap("--gateway", "127.0.0.1:50051")
    assert _filters(parsed)[1] == [ROUTER_FILTER]
    assert not parsed.dynamic_resources.ads_config.grpc_services[0].initial_metadata
    assert parsed.static_resources.listeners[0].address.socket_address.address == "127.0.0.1"  # loopback

    path = tmp_path / "envoy.json"
    result = CliRunner().invoke(app, ["xds-bootstrap", "--envoy", "--mesh-secret", "s", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the mesh secret
    assert f"envoy -c {path}" in result.stderr


def test_a_listen_address_without_a_port_is_refused() -> None:
    result = CliRunner().invoke(app, ["xds-bootstrap", "--envoy", "--listen", "localhost"])
    assert result.exit_code == 2
    assert "the listen address 'localhost' is not host:port" in result.output
