"""schemathesis against /openapi.json: every check, in its examples, coverage, fuzzing and stateful
phases, finds no server error and no response that contradicts the schema; once on the shared mesh
(no API keys) and once on a mesh whose gateway requires a key (sent by schemathesis; the `ignored_auth`
check then also proves a call without it is refused).

The run is the `schemathesis` command, bounded (examples per operation, no shrinking) and seeded, so
CI judges the code, not the draw of the day. Left out: the endless capability watch stream, backend
registration (random backends would join the mesh's registry) and /metrics (plain text).

One rule is relaxed: `positive_data_acceptance` also takes 400 (and 416 for a download range).
The schema states the limits the contract fixes (types, int32 ranges, required fields, non-empty
texts, page sizes, file ids, TTLs); limits each deployment sets (text length, image sizes, steps),
models and voices that must exist, and opaque tokens cannot be a JSON schema, and a request over
them is a 400 naming the field.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capmesh.gateway.server.config import GatewaySettings
from tests.http.support import start_mesh

EXAMPLES_PER_OPERATION = 2
SEED = 20261130
KEY = "schemathesis-key"
MESH_SECRET = "schemathesis-mesh-secret"

CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "416", "429", "5xx"]
"""


ALL_PHASES = "examples,coverage,fuzzing,stateful"


def run_schemathesis(
    base_url: str, folder: Path, *headers: str, phases: str = ALL_PHASES
) -> subprocess.CompletedProcess:
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        "--no-shrink",
        "--workers",
        "1",  # hypothesis' lambda introspection is not thread-safe
        "--request-timeout",
        "60",
        "--max-response-time",
        "120",  # a shared CI machine can be slow; time is not what this test judges
        "--exclude-path-regex",
        "^/v1/(capabilities:watch|backends)",
        "--exclude-path",
        "/metrics",
        *[part for header in headers for part in ("-H", header)],
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=folder)


def assert_green(done: subprocess.CompletedProcess) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    assert "Tested:" in output, output[-3000:]


def test_schemathesis_finds_nothing_without_keys(mesh, tmp_path):
    assert_green(run_schemathesis(mesh.http_url, tmp_path))


@pytest.fixture(scope="module")
def keyed_mesh(background_loop, tmp_path_factory):
    settings = GatewaySettings(
        port=0,
        http_port=0,
        host="127.0.0.1",
        files_dir=str(tmp_path_factory.mktemp("keyed-files")),
        sse_keepalive_s=1.0,
        max_body_bytes=256 * 1024,
        max_file_bytes=2 * 1024 * 1024,
        grace_period_s=0,
        log_level="warning",
        api_keys=(KEY,),
        mesh_secret=MESH_SECRET,
    )
    running = background_loop.run(
        start_mesh(
            settings,
            backend_settings={"mesh_secret": MESH_SECRET, "gateway_api_key": KEY},
            metadata=(("authorization", f"Bearer {KEY}"),),
        )
    )
    yield running
    background_loop.run(running.stop())


def test_schemathesis_finds_nothing_with_an_api_key(keyed_mesh, tmp_path):
    # The coverage phase's walk over every field is the slow part and does not depend on the key.
    done = run_schemathesis(
        keyed_mesh.http_url, tmp_path, f"Authorization: Bearer {KEY}", phases="examples,fuzzing,stateful"
    )
    assert_green(done)
