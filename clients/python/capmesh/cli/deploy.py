"""`capmesh deploy` (a mesh file as Kubernetes manifests, its JSON Schema) and `capmesh models pull`.

capmesh deploy kubernetes -f deploy/gpu.yaml [-o manifests/]
capmesh deploy schema [-o deploy/mesh.schema.json]
capmesh models pull -f deploy/gpu.yaml
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from capmesh.mesh.spec import MeshSpec

deploy_app = typer.Typer(no_args_is_help=True, help="Deploy a mesh file: Kubernetes manifests, the file's schema.")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")


def read_mesh(path: Path, command: str) -> MeshSpec:
    """The checked mesh file, or exit 2 with every problem (file:line: field: reason) on stderr."""
    from capmesh.mesh.spec import MeshFileError, load_mesh

    try:
        return load_mesh(path)
    except MeshFileError as exc:
        typer.secho(f"capmesh {command}: {path} is not a usable mesh file:\n{exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


@deploy_app.command("kubernetes")
def kubernetes(
    file: Path = typer.Option(..., "-f", "--file", help="The mesh file, e.g. deploy/gpu.yaml."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write one file per object here instead of printing."),
) -> None:
    """Print (or write) the Kubernetes manifests of a mesh file."""
    import yaml

    from capmesh.mesh.kubernetes import manifests

    objects = manifests(read_mesh(file, "deploy kubernetes"))
    if out is None:
        typer.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(objects):
        path = out / f"{index:02d}-{item['kind'].lower()}-{item['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(item, sort_keys=False))
        typer.echo(str(path))


@deploy_app.command("schema")
def schema(
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the schema here instead of printing it."),
) -> None:
    """Print the JSON Schema of a mesh file (derived from the settings classes)."""
    from capmesh.mesh.spec import schema_text

    if out is None:
        typer.echo(schema_text(), nl=False)
    else:
        out.write_text(schema_text())


def pull(file: Path = typer.Option(..., "-f", "--file", help="The mesh file, e.g. deploy/gpu.yaml.")) -> None:
    """Download every hub model a mesh file names, ahead of time (on a machine that reaches the hub)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    models = hub_models(read_mesh(file, "models pull"))
    if not models:
        typer.echo(f"{file} names no hub model: nothing to pull")
        return
    if is_offline_mode():
        typer.secho(
            f"capmesh models pull: the hub is offline here (HF_HUB_OFFLINE=1); run it on a machine that reaches "
            f"huggingface.co, or unset HF_HUB_OFFLINE. Models: {', '.join(models)}",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
    for model in models:
        typer.echo(f"pulling {model} ...")
        try:
            path = snapshot_download(model)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            typer.secho(f"capmesh models pull: {model}: {exc}", fg="red", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"{model}: {path}")


def hub_models(spec: MeshSpec) -> list[str]:
    """Hub ids the capabilities load themselves: `model` and `extra_models`, neither 'tiny' nor a folder.

    An `openai` engine serves `openai_model` from a remote API, so its `model` is not pulled."""
    found: list[str] = []
    for component in spec.capabilities:
        settings = component.settings
        if getattr(settings, "engine", "") == "openai":
            continue
        names = [getattr(settings, "model", ""), *getattr(settings, "extra_models", ())]
        for name in names:
            if isinstance(name, str) and HUB_ID.match(name) and not Path(name).exists() and name not in found:
                found.append(name)
    return found
