"""The `capmesh` command: serve capabilities, run the gateway or the whole mesh, call everything.

Sub-command modules in this package that define `register(app)` are added automatically, so each
capability's client commands live beside the others without editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Optional

import typer

import capmesh.cli as cli_package

app = typer.Typer(no_args_is_help=True, add_completion=False, help="capmesh: generative-AI capabilities over gRPC.")
models_app = typer.Typer(no_args_is_help=True, help="Model checkpoints.")
app.add_typer(models_app, name="models")


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
    capability: str = typer.Argument(..., help="tts, llm, videogen, imagegen or talkinghead"),
    host: Optional[str] = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port to bind; 0 picks a free one."),
    gateway: Optional[str] = typer.Option(None, help="host:port of a gateway to register with."),
    engine: Optional[str] = typer.Option(None, help="The engine, e.g. espeak, transformers, openai."),
    model: Optional[str] = typer.Option(None, help="The model: 'tiny', a local folder or a hub id."),
    setting: list[str] = typer.Option([], "--set", help="Any other setting as KEY=VALUE (repeatable)."),
) -> None:
    """Run one capability's gRPC server until SIGTERM or Ctrl-C."""
    from capmesh.services.catalog import service_module
    from capmesh.services.runtime.server import run
    from capmesh.services.runtime.settings import SettingsError, load_settings

    module = service_module(capability)
    overrides: dict[str, object] = {"host": host, "port": port, "gateway": gateway, **parse_assignments(setting)}
    field_names = set(module.Settings.__dataclass_fields__)
    for name, value in (("engine", engine), ("model", model)):
        if value is not None:
            if name not in field_names:
                raise typer.BadParameter(f"{capability} has no {name} setting")
            overrides[name] = value
    try:
        settings = load_settings(module.Settings, module.ENV_PREFIX, overrides)
    except SettingsError as exc:
        typer.secho(f"capmesh {capability}: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    run(module.build_service(settings))


@models_app.command("make-tiny")
def make_tiny(
    directory: Optional[Path] = typer.Argument(None, help="Where to build; default the tiny cache."),
    only: list[str] = typer.Option([], help="Build only these capabilities' checkpoints."),
) -> None:
    """Build tiny random checkpoints for every model-backed engine (offline tests and demos)."""
    from capmesh.services.catalog import TINY_CHECKPOINTS, tiny_module
    from capmesh.services.runtime.tiny import ensure_tiny

    for capability in only or TINY_CHECKPOINTS:
        module = tiny_module(capability)
        path = ensure_tiny(module.TINY_NAME, module.build_tiny, cache_dir=directory)
        typer.echo(f"{capability}: {path} (random weights)")


def _register_subcommands() -> None:
    for info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if info.name == "main":
            continue
        module = importlib.import_module(f"capmesh.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_subcommands()

if __name__ == "__main__":
    app()
