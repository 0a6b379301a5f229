"""The mesh file: its schema is derived from the settings classes and published fresh, the shipped
profiles are valid, and bad files are refused with the file, the line and the field."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from capmesh.mesh.spec import MeshFileError, load_mesh, mesh_schema, schema_text
from capmesh.services.catalog import CAPABILITIES, NAMES
from capmesh.services.runtime.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "deploy").glob("*.yaml"))
SCHEMA_PATH = ROOT / "deploy" / "mesh.schema.json"


def test_the_profiles_are_the_three_the_readme_names():
    assert [p.name for p in PROFILES] == ["gpu.yaml", "offline.yaml", "remote.yaml"]


def test_the_published_schema_is_fresh():
    assert SCHEMA_PATH.read_text() == schema_text(), "regenerate: capmesh deploy schema -o deploy/mesh.schema.json"


def test_the_schema_is_valid_and_derived_from_every_settings_class():
    schema = mesh_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    capabilities = schema["properties"]["capabilities"]["properties"]
    assert list(capabilities) == list(NAMES)
    for row in CAPABILITIES:
        props = capabilities[row.name]["properties"]
        fields = {f.name for f in dataclasses.fields(row.settings_class)} - {
            "host",
            "port",
            "gateway",
            "advertise_address",
        }
        assert fields <= set(props), row.name
        assert {"replicas", "gpus"} <= set(props)
        assert props["replicas"]["minimum"] == 1
    llm = capabilities["llm"]["properties"]
    assert llm["engine"]["enum"] == ["transformers", "openai"]
    assert llm["max_batch_size"] == {
        "type": "integer",
        "default": 16,
        "description": llm["max_batch_size"]["description"],
    }
    assert llm["residency"]["enum"] == ["resident", "idle"]
    assert llm["openai_api_key"] == {"$ref": "#/$defs/secretRef"}
    assert capabilities["videogen"]["properties"]["extra_models"]["type"] == "array"
    # Descriptions are the fields' trailing comments; a subclass's own comment wins.
    assert schema["properties"]["gateway"]["properties"]["port"]["description"].startswith("gRPC:")
    assert capabilities["tts"]["properties"]["grace_period_s"]["description"].startswith("SIGTERM")


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_each_profile_validates_and_builds_every_settings_object(profile):
    spec = load_mesh(profile)
    jsonschema.validate(yaml.safe_load(profile.read_text()), mesh_schema())
    assert spec.capabilities
    for component in spec.capabilities:
        # What `capmesh up` hands each process reads back as the same settings object.
        row = next(r for r in CAPABILITIES if r.name == component.name)
        assert load_settings(row.settings_class, row.env_prefix, environ=component.env()) == component.settings


def test_the_offline_profile_describes_every_capability_on_tiny_checkpoints():
    spec = load_mesh(ROOT / "deploy" / "offline.yaml")
    assert [c.name for c in spec.capabilities] == list(NAMES)
    assert spec.offline
    for component in spec.capabilities:
        assert getattr(component.settings, "model", "tiny") == "tiny"
        assert component.gpus == 0


def test_the_gpu_profile_names_hub_checkpoints_with_dtype_and_shares_one_device_group():
    spec = load_mesh(ROOT / "deploy" / "gpu.yaml")
    assert spec.gateway.settings.gpu_mode == "exclusive"
    gpu = [c for c in spec.capabilities if c.gpus]
    assert {c.name for c in gpu} >= {"llm", "videogen", "imagegen"}
    for component in gpu:
        assert "/" in component.settings.model
        assert component.settings.dtype != "auto"
    groups = {c.name: c.settings.device_group for c in spec.capabilities}
    assert groups["videogen"] == groups["imagegen"] != ""


def test_secrets_are_references_never_values():
    spec = load_mesh(ROOT / "deploy" / "remote.yaml")
    assert spec.gateway.secret_env()["CAPMESH_GATEWAY_API_KEYS"].env == "CAPMESH_API_KEYS"
    assert spec.component("llm").secret_env()["CAPMESH_LLM_OPENAI_API_KEY"].env == "VLLM_API_KEY"
    assert all("API_KEY" not in name for c in spec.capabilities for name in c.env())


def _refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    with pytest.raises(MeshFileError) as info:
        load_mesh(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        ("capabilities:\n  tts: {}\n  speech: {}\n", 3, "capabilities.speech", "unknown capability"),
        (
            "capabilities:\n  tts:\n    engine: espeak\n    voice_of_god: true\n",
            4,
            "tts.voice_of_god",
            "unknown setting",
        ),
        ("gateway:\n  colour: blue\n", 2, "gateway.colour", "unknown setting"),
        ("capabilities:\n  llm:\n    max_batch_size: four\n", 3, "llm.max_batch_size", "not of type 'integer'"),
        ("capabilities:\n  tts:\n    eager_load: 'yes'\n", 3, "tts.eager_load", "not of type 'boolean'"),
        ("capabilities:\n\n  tts:\n    replicas: 0\n", 4, "tts.replicas", "less than the minimum of 1"),
        ("capabilities:\n  llm:\n    engine: transformers\n    model: ''\n", 4, "llm.model", "must name a model"),
        (
            "capabilities:\n  llm:\n    engine: openai\n    openai_model: ''\n",
            4,
            "llm.openai_model",
            "must name the remote model",
        ),
        ("capabilities:\n  llm:\n    engine: vllm\n", 3, "llm.engine", "is not one of"),
        ("capabilities:\n  tts:\n    port: 9000\n", 3, "tts.port", "set by whoever runs the mesh"),
        ("gateway:\n  api_keys: [k1, k2]\n", 2, "gateway.api_keys", "is not of type 'object'"),
        ("gateway:\n  lease_s: 1\n  heartbeat_interval_s: 2\n", 2, "gateway.lease_s", "must be longer"),
        ("gateway:\n  replicas: 2\n", 2, "gateway.replicas", "redis_url"),
    ],
)
def test_a_bad_mesh_file_is_refused_naming_the_file_line_and_field(tmp_path, text, line, field, reason):
    message = _refused(tmp_path, text)
    assert re.search(rf"mesh\.yaml:{line}: \S*{re.escape(field)}: .*{re.escape(reason)}", message), message


def test_every_problem_is_listed_at_once_in_line_order(tmp_path):
    message = _refused(tmp_path, "gateway:\n  colour: blue\ncapabilities:\n  tts:\n    replicas: 0\n  nope: {}\n")
    assert [int(n) for n in re.findall(r"mesh\.yaml:(\d+):", message)] == [2, 5, 6]


def test_a_file_that_is_not_yaml_names_its_line(tmp_path):
    assert re.search(r"mesh\.yaml:3: not valid YAML", _refused(tmp_path, "gateway:\n  port: 1\n  - x\n"))
