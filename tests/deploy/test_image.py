"""The container image, checked statically (no image can be built on these machines): what it
copies exists, it installs capmesh the way scripts/bootstrap.sh does, runs as a non-root user, and
every command it or the manifests start is a real `capmesh` command."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.mesh.kubernetes import RUN_AS_USER, manifests
from capmesh.mesh.spec import load_mesh

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_every_copied_path_exists_and_the_context_admits_it():
    copied = [shlex.split(rest)[:-1] for word, rest in instructions() if word == "COPY"]
    sources = [source for group in copied for source in group]
    assert {"clients", "services", "gateway", "pyproject.toml", "setup.py"} <= set(sources)
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is left out of the build context"


def test_it_installs_like_bootstrap_torch_pin_first_then_the_project():
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    (pin,) = set(re.findall(r"torch==([\d.]+)", bootstrap))
    args = dict(rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest)
    assert args["TORCH_VERSION"] == pin
    runs = [rest for word, rest in instructions() if word == "RUN"]
    torch_step = next(i for i, run in enumerate(runs) if "torch==${TORCH_VERSION}" in run)
    project_step = next(i for i, run in enumerate(runs) if "pip install ." in run)
    assert torch_step < project_step
    assert any("apt-get install" in run and "espeak-ng" in run for run in runs)


def test_it_runs_as_the_non_root_user_the_manifests_expect():
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users == [str(RUN_AS_USER)]
    assert any(f"--uid {RUN_AS_USER}" in rest for word, rest in instructions() if word == "RUN")


def _runs(argv: list[str]) -> None:
    result = CliRunner().invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, (argv, result.output)


def test_its_entrypoint_and_command_are_the_capmesh_cli():
    entry = [json.loads(rest) for word, rest in instructions() if word == "ENTRYPOINT"]
    cmd = [json.loads(rest) for word, rest in instructions() if word == "CMD"]
    assert entry == [["capmesh"]]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'capmesh = "capmesh.cli.main:app"' in pyproject
    _runs([arg for arg in cmd[0] if arg != "--help"])


@pytest.mark.parametrize("profile", sorted((ROOT / "deploy").glob("*.yaml")), ids=lambda p: p.name)
def test_every_container_of_the_manifests_starts_a_capmesh_command(profile):
    for item in manifests(load_mesh(profile)):
        if item["kind"] not in ("Deployment",):
            continue
        (container,) = item["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["capmesh"]
        args = container["args"]
        _runs(args[:2] if args[0] == "serve" else args[:1])
