"""The `capmesh` command: serve capabilities, run the gateway or the whole mesh, call everything.

The gateway, jobs and files commands are listed here; each capability's own commands come from the
`cli` module its catalogue row names (services/catalog.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from capmesh.cli import certs, deploy, files, gateway, jobs, xds
from capmesh.services.catalog import CAPABILITIES, NAMES, capability

app = typer.Typer(no_args_is_help=True, add_completion=False, help="capmesh: generative-AI capabilities over gRPC.")
models_app = typer.Typer(no_args_is_help=True, help="Model checkpoints.")
app.add_typer(models_app, name="models")


@app.callback()
def _options(
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="CAPMESH_API_KEY",
        show_default=False,
        help="The key every command presents to the gateway (Authorization: Bearer).",
    ),
) -> None:
    # Set once for the process: every channel the commands open sends it (capmesh.client.channel).
    from capmesh.client.channel import use_api_key

    use_api_key(api_key)


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE")
        values[key.strip().replace("-", "_")] = value
    return values


@app.command()
def serve(
    name: str = typer.Argument(..., metavar="CAPABILITY", help=", ".join(NAMES)),
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port to bind; 0 picks a free one."),
    gateway: str | None = typer.Option(None, help="host:port of a gateway to register with."),
    engine: str | None = typer.Option(None, help="The engine, e.g. espeak, transformers, openai."),
    model: str | None = typer.Option(None, help="The model: 'tiny', a local folder or a hub id."),
    setting: list[str] = typer.Option([], "--set", help="Any other setting as KEY=VALUE (repeatable)."),
) -> None:
    """Run one capability's gRPC server until SIGTERM or Ctrl-C."""
    from capmesh.services.runtime.server import run
    from capmesh.services.runtime.settings import SettingsError, load_settings

    try:
        row = capability(name)
    except KeyError as exc:
        raise typer.BadParameter(exc.args[0], param_hint="CAPABILITY") from None
    overrides: dict[str, object] = {"host": host, "port": port, "gateway": gateway, **parse_assignments(setting)}
    field_names = set(row.settings_class.__dataclass_fields__)
    for key, value in (("engine", engine), ("model", model)):
        if value is not None:
            if key not in field_names:
                raise typer.BadParameter(f"{name} has no {key} setting")
            overrides[key] = value
    try:
        settings = load_settings(row.settings_class, row.env_prefix, overrides)
    except SettingsError as exc:
        typer.secho(f"capmesh {name}: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    run(row.build_service(settings))


@models_app.command("make-tiny")
def make_tiny(
    directory: Path | None = typer.Argument(None, help="Where to build; default the tiny cache."),
    only: list[str] = typer.Option([], help="Build only these capabilities' checkpoints."),
) -> None:
    """Build tiny random checkpoints for every model-backed engine (offline tests and demos)."""
    from capmesh.services.runtime.tiny import ensure_tiny

    rows = [capability(name) for name in only] if only else [c for c in CAPABILITIES if c.tiny_checkpoint]
    for row in rows:
        module = row.tiny_module()
        path = ensure_tiny(module.TINY_NAME, module.build_tiny, cache_dir=directory)
        typer.echo(f"{row.name}: {path} (random weights)")


models_app.command("pull")(deploy.pull)
for commands in (gateway, jobs, files, deploy, certs, xds):
    commands.register(app)
for row in CAPABILITIES:
    if row.cli:
        importlib.import_module(row.cli).register(app)

if __name__ == "__main__":
    app()
