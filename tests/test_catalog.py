"""The catalogue is the one list of capabilities: every row is complete, and every capability
contract the protos define has a row."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import pytest

import capmesh
from capmesh.services.catalog import CAPABILITIES, NAMES, capability, find_method, load_contracts

# Contracts that are not capabilities: the gateway's own services and the per-server admin service.
NOT_CAPABILITIES = {"gateway", "admin", "common"}


@pytest.mark.parametrize("row", CAPABILITIES, ids=NAMES)
def test_every_row_names_a_contract_a_server_and_commands_that_exist(row):
    assert [s.full_name.split(".")[1] for s in row.services()] == [row.name] * len(row.services())
    server = row.server_module()
    assert callable(server.build_service) and row.env_prefix == server.ENV_PREFIX
    assert row.settings_class is server.Settings
    assert row.default_engine == "" or isinstance(row.default_engine, str)
    if row.cli:
        assert callable(importlib.import_module(row.cli).register)
    if row.tiny_checkpoint:
        tiny = row.tiny_module()
        assert callable(tiny.build_tiny) and tiny.TINY_NAME


def test_every_capability_contract_has_a_row():
    areas = {m.name for m in pkgutil.iter_modules(capmesh.__path__) if m.ispkg}
    contracts = {
        area for area in areas - NOT_CAPABILITIES if importlib.util.find_spec(f"capmesh.{area}.v1") is not None
    }
    assert contracts == set(NAMES)


def test_lookups():
    assert len(load_contracts()) == len(CAPABILITIES)
    assert find_method("/capmesh.tts.v1.TtsService/StreamSynthesize").server_streaming
    assert find_method("/capmesh.tts.v1.TtsService/NoSuchMethod") is None
    assert find_method("/capmesh.gateway.v1.FileService/DownloadFile") is None  # the gateway's own, not a capability
    with pytest.raises(KeyError, match="known: tts"):
        capability("nope")
