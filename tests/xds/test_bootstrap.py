"""`capmesh xds-bootstrap` and the typed client's `xds:` channels, without a mesh."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.client.xds import BOOTSTRAP_CONFIG_ENV, BOOTSTRAP_FILE_ENV, use_gateway_xds, xds_metadata
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
